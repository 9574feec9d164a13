"""Text from the database, the env file or a report, made safe for a terminal: control
characters other than newline become visible escapes (`\\x1b`), so none is ever obeyed."""

from __future__ import annotations


def visible(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch in " \n" else repr(ch)[1:-1] for ch in text)
