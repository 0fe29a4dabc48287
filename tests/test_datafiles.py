"""The fixtures in tests/data are byte-for-byte copies of the shared data set, and stay so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datafiles import DATA, SHARED_DATA


def _copies() -> list[Path]:
    return sorted(path.relative_to(DATA) for path in DATA.rglob("*") if path.is_file())


def test_the_repository_holds_the_fixtures() -> None:
    copies = {str(path) for path in _copies()}
    assert {"cap/PROVENANCE.md", "cap/valid/PROVENANCE.md", "cap/invalid/PROVENANCE.md", "geo/PROVENANCE.md"} <= copies
    assert not any(path.startswith("cap/schema") for path in copies), "the OASIS XSD is found by setting, not copied"


def test_every_copy_is_identical_to_the_shared_data_set() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data set at {SHARED_DATA} to compare the copies with")
    missing = [str(path) for path in _copies() if not (SHARED_DATA / path).is_file()]
    differ = [str(path) for path in _copies()
              if (SHARED_DATA / path).is_file() and (DATA / path).read_bytes() != (SHARED_DATA / path).read_bytes()]
    assert (missing, differ) == ([], []), f"not in {SHARED_DATA}: {missing}; different: {differ}"
    assert len(_copies()) >= 50
