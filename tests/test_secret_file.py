"""Secrets on disk: written whole, 0600 whatever the umask, in directories others cannot read."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tocsin.secret_file import private_dir, write_secret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave every new file world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_secret_is_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "keys" / "token"
    write_secret(path, "tct_secret\n")
    assert path.read_text() == "tct_secret\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700  # created by the write: private too


def test_a_rewrite_replaces_the_whole_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_secret(path, b"x" * 10_000)
    write_secret(path, b"short")
    assert path.read_bytes() == b"short"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_create_only_keeps_what_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    write_secret(path, b"theirs", replace=False)
    with pytest.raises(FileExistsError):
        write_secret(path, b"mine", replace=False)
    assert path.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing-key.pem"]


def test_an_existing_directory_of_the_user_is_left_as_it_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    write_secret(tmp_path / "watch-state.json", b"{}")
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "watch-state.json") == 0o600


def test_private_dir_closes_an_existing_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    assert private_dir(data) == data
    assert mode(data) == 0o700
