"""Text from the database or the env file, shown literally: no markup, no escape codes."""

from __future__ import annotations

from rich.text import Text

from ..display import visible


def literal(value: object, style: str = "") -> Text:
    """`value` as plain text; control characters other than newline appear as `\\x1b`-style escapes."""
    return Text(visible(str(value)), style=style)
