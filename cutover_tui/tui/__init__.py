"""The Textual face of the console: `make_app(settings)` builds it, `run_tui(settings)` runs it."""
