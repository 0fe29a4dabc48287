"""`tocsin cap validate`: per-file verdicts, exit codes, and the --json report."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.cap.capdata import CAP_DATA, minimal
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_json
from tocsin.cli.cap_cmd import cap

GOOD = CAP_DATA / "valid" / "oasis-spec-a2-severe-thunderstorm.xml"
BAD = CAP_DATA / "invalid" / "bz-nms-missing-sender.xml"


def test_valid_files_exit_zero() -> None:
    result = CliRunner().invoke(cap, ["validate", str(GOOD), str(GOOD)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [f"{GOOD}: valid", f"{GOOD}: valid"]


def test_each_failed_rule_is_printed_and_exit_is_one() -> None:
    result = CliRunner().invoke(cap, ["validate", str(GOOD), str(BAD)])
    assert result.exit_code == 1
    assert f"{GOOD}: valid" in result.output
    assert f"{BAD}: cap.required at sender: <sender> is required in <alert>" in result.output


def test_several_violations_are_each_printed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_bytes(minimal(msg_type="Update", scope="Restricted"))
    result = CliRunner().invoke(cap, ["validate", str(broken)])
    assert result.exit_code == 1
    assert "cap.references-required at references" in result.output
    assert "cap.restriction-required at restriction" in result.output


def test_json_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(cap, ["validate", "--json", str(GOOD), str(BAD)])
    assert result.exit_code == 1
    good, bad = (json.loads(line) for line in result.output.splitlines())
    assert good == {"file": str(GOOD), "valid": True, "violations": []}
    assert bad["valid"] is False
    assert {"code": "cap.required", "path": "sender", "detail": "<sender> is required in <alert>"} in bad["violations"]


def test_json_documents_are_checked_too(tmp_path: Path) -> None:
    document = tmp_path / "alert.json"
    document.write_text(json.dumps(to_json(parse_xml(GOOD.read_bytes()))))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = CliRunner().invoke(cap, ["validate", str(document), str(garbage)])
    assert result.exit_code == 1
    assert f"{document}: valid" in result.output
    assert f"{garbage}: cap.not-json at alert" in result.output


def test_missing_file_is_a_usage_error() -> None:
    result = CliRunner().invoke(cap, ["validate", "/nonexistent/alert.xml"])
    assert result.exit_code == 2
