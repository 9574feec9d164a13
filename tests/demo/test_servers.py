"""Where each server version comes from: chosen by one setting, fetched and checked by the project."""

from __future__ import annotations

import pytest

from cutover_tui.demo import servers


def test_the_setting_names_a_supported_version_or_fails_in_one_sentence():
    assert servers.requested_version(None) == servers.requested_version("") == 18
    assert [servers.requested_version(str(v)) for v in (15, 16, 17, 18)] == [15, 16, 17, 18]
    for wrong in ("14", "19", "seventeen", "17.2"):
        with pytest.raises(servers.ServerUnavailable, match="use one of 15, 16, 17, 18"):
            servers.requested_version(wrong)


def test_a_tarball_unlike_its_pinned_integrity_is_refused_and_nothing_is_cached(tmp_path):
    release, _ = servers.NPM_RELEASES[17]
    target = tmp_path / release
    with pytest.raises(servers.ServerUnavailable, match="does not match its pinned integrity"):
        servers._unpack_npm(release, "sha512-" + "A" * 86 + "==", target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_the_fetched_17_runs_its_own_binaries(tmp_path, monkeypatch):
    """Unpacked with its library links recreated, into a fresh cache."""
    import subprocess

    monkeypatch.setenv("CUTOVER_POSTGRES_CACHE", str(tmp_path))
    folder = servers.binaries(17)
    assert folder.is_relative_to(tmp_path)
    done = subprocess.run([folder / "postgres", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("postgres (PostgreSQL) 17.")
