"""Every workaround that touches Textual's internals, each with the condition for removing it.

Textual is pinned exactly (pyproject.toml) because of these: `footer` (a Footer that rebuilds
only when its keys change) and `watchers` (Textualize/textual#6666). On a Textual upgrade, run
tests/tui (the footer and leak tests name what broke) before moving the pin.
"""
