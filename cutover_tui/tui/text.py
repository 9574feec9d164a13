"""Text from the database or the env file, shown literally: no markup, no escape codes."""

from __future__ import annotations

from rich.text import Text


def literal(value: object, style: str = "") -> Text:
    """`value` as plain text; control characters other than newline appear as `\\x1b`-style escapes."""
    text = str(value)
    shown = "".join(ch if ch.isprintable() or ch in " \n" else repr(ch)[1:-1] for ch in text)
    return Text(shown, style=style)
