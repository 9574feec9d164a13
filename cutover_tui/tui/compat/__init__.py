"""Every workaround that touches Textual's internals, each with the condition for removing it.

Textual is pinned exactly (pyproject.toml) because of these: `footer` (a Footer that rebuilds
only when its keys change, with short labels at small widths), `toasts` (only the newest few
notifications on screen) and `watchers` (Textualize/textual#6666). On a Textual upgrade, run
tests/tui (the footer, toast and leak tests name what broke) before moving the pin.
"""
