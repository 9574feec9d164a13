"""Text from the database or the env file, shown literally: no markup, no escape codes."""

from __future__ import annotations

from rich.text import Text

from ..display import one_line, visible


def literal(value: object, style: str = "") -> Text:
    """`value` as plain text; control characters other than newline appear as `\\x1b`-style escapes."""
    return Text(visible(str(value)), style=style)


def field(value: object, style: str = "") -> Text:
    """A one-line field from the database as plain text; a newline in it shows as `\\n`."""
    return Text(visible(one_line(str(value))), style=style)
