"""The fixtures in tests/data are byte-for-byte copies of the shared data set, and stay so.

tests/data/SHA256SUMS records each copy's digest as copied (running `sha256sum -c --quiet` on it
from the shared data set's folder checks the source against it); the tests read nothing
outside the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.datafiles import DATA

SUMS = DATA / "SHA256SUMS"


def _copies() -> list[Path]:
    return sorted(path.relative_to(DATA) for path in DATA.rglob("*") if path.is_file() and path != SUMS)


def test_the_repository_holds_the_fixtures() -> None:
    copies = {str(path) for path in _copies()}
    assert {"cap/PROVENANCE.md", "cap/valid/PROVENANCE.md", "cap/invalid/PROVENANCE.md", "geo/PROVENANCE.md"} <= copies
    assert not any(path.startswith("cap/schema") for path in copies), "the OASIS XSD is found by setting, not copied"
    assert len(_copies()) >= 50


def test_every_copy_is_the_one_recorded_when_it_was_copied() -> None:
    recorded = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        recorded[name.removeprefix("./")] = digest
    actual = {str(path): hashlib.sha256((DATA / path).read_bytes()).hexdigest() for path in _copies()}
    assert actual == recorded, "a fixture changed or was added: copy it again from the shared data set and update SHA256SUMS"
