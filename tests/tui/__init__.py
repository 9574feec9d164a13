"""Tests of the Textual face, mirroring cutover_tui/tui."""
