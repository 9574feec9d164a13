"""Atomic file replacement, shared by the env file, the runbook file and reports.

A reader always finds the old file or the new one, whole: the bytes go to a hidden
temp file beside the target, are flushed to disk, and a rename puts them in place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

# Leftovers of a crash mid-write are named `.<file>.cutover-tmp-<random>`: never the file itself.
TEMP_INFIX = ".cutover-tmp-"


def write_temp(target: Path, data: bytes, mode: int | None = None, owner: tuple[int, int] | None = None) -> Path:
    """`data` flushed to a new temp file beside `target`; `mode` None honours the umask; `owner`
    (uid, gid) is given to it where it differs from this process's (PermissionError if it may not)."""
    temp = target.with_name(f".{target.name}{TEMP_INFIX}{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
    try:
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(file.fileno(), *owner)
            if mode is not None:
                os.fchmod(file.fileno(), mode)  # after chown, which may clear set-id bits
            os.fsync(file.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def place(temp: Path, target: Path) -> None:
    """Move a written temp file over `target`; the rename is the commit point."""
    os.replace(temp, target)
    # Makes the rename survive a power cut; the new content is in place either way.
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(target: Path, data: bytes, *, mode: int | None = None, owner: tuple[int, int] | None = None,
                 before_replace: Callable[[], None] | None = None) -> None:
    """Replace `target` with `data`; `before_replace` may raise to abandon the write.

    An OSError means nothing was replaced and no temp file is left behind.
    """
    temp = write_temp(target, data, mode, owner)
    try:
        if before_replace is not None:
            before_replace()
        place(temp, target)
    finally:
        temp.unlink(missing_ok=True)
