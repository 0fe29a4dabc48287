"""Where the tests' fixtures live: tests/data in the repository, and the OASIS XSD by setting.

tests/data holds byte-for-byte copies of the project's shared data set, with their digests
(tests/data/SHA256SUMS, checked by tests/test_datafiles.py). Only the XSD's default folder is
outside the repository.
The OASIS CAP 1.2 XSD is not copied: the tests that use it as a referee find its folder
through TOCSIN_TEST_CAP_SCHEMA_DIR and skip when it is absent, unless the run requires it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
CAP_DATA = DATA / "cap"
GEO_DATA = DATA / "geo"
# The XSD referee's default folder, beside the checkout; the only path outside it.
DEFAULT_SCHEMA_DIR = ROOT.parent / "shared" / "data" / "cap" / "schema"

SCHEMA_DIR_SETTING = "TOCSIN_TEST_CAP_SCHEMA_DIR"
REQUIRE_XSD_SETTING = "TOCSIN_TEST_REQUIRE_XSD"
SCHEMA_FILE = "CAP-v1.2.xsd"


def cap_schema_dir() -> Path:
    """The folder that holds the OASIS XSD: the setting, else ../shared/data/cap/schema."""
    configured = os.environ.get(SCHEMA_DIR_SETTING, "").strip()
    return Path(configured) if configured else DEFAULT_SCHEMA_DIR


def xsd_required() -> bool:
    """Whether a missing XSD fails the run rather than skipping (CI sets this)."""
    flag = os.environ.get(REQUIRE_XSD_SETTING, "").strip().lower()
    return flag in {"1", "true", "yes"} or os.environ.get("CI", "").strip().lower() == "true"


def cap_schema_path() -> Path:
    """The CAP 1.2 XSD file; skips the calling test when it is absent, or fails when required."""
    path = cap_schema_dir() / SCHEMA_FILE
    if path.is_file():
        return path
    reason = f"the OASIS CAP 1.2 XSD is not at {path} (set {SCHEMA_DIR_SETTING} to the folder that holds {SCHEMA_FILE})"
    if xsd_required():
        pytest.fail(f"{reason}; {REQUIRE_XSD_SETTING} or CI=true requires it", pytrace=False)
    pytest.skip(reason)
