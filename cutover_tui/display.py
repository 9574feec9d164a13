"""Text from the database, the env file or a report, made safe for a terminal: control
characters other than newline become visible escapes (`\\x1b`), so none is ever obeyed."""

from __future__ import annotations


def visible(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch in " \n" else repr(ch)[1:-1] for ch in text)


def one_line(text: str) -> str:
    """A field shown on one line (an operator, an action): a line break in it appears as `\\n`
    or `\\r`, so it can never forge a line of its own; other characters are left to `visible`."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
