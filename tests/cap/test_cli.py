"""`tocsin cap validate`: per-file verdicts, exit codes, and the --json report."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.cap.capdata import CAP_DATA, TSUNAMI_CANCEL, minimal
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_json
from tocsin.cli.cap_cmd import cap

GOOD = CAP_DATA / "valid" / "oasis-spec-a2-severe-thunderstorm.xml"
BAD = CAP_DATA / "invalid" / "bz-nms-missing-sender.xml"


def test_valid_files_exit_zero() -> None:
    result = CliRunner().invoke(cap, ["validate", str(GOOD), str(GOOD)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [f"{GOOD}: valid CAP 1.2", f"{GOOD}: valid CAP 1.2"]


def test_each_failed_rule_is_printed_and_exit_is_one() -> None:
    result = CliRunner().invoke(cap, ["validate", str(GOOD), str(BAD)])
    assert result.exit_code == 1
    assert f"{GOOD}: valid CAP 1.2" in result.output
    assert f"{BAD}: not valid CAP 1.2" in result.output
    assert f"{BAD}: cap.required at sender (CAP 1.2 schema): <sender> is required in <alert>" in result.output


def test_several_violations_are_each_printed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_bytes(minimal(msg_type="Update", scope="Restricted"))
    result = CliRunner().invoke(cap, ["validate", str(broken)])
    assert result.exit_code == 1
    assert "cap.references-required at references (CAP 1.2 text)" in result.output
    assert "cap.restriction-required at restriction (CAP 1.2 text)" in result.output


def test_json_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(cap, ["validate", "--json", str(GOOD), str(BAD)])
    assert result.exit_code == 1
    good, bad = (json.loads(line) for line in result.output.splitlines())
    assert good == {"file": str(GOOD), "valid": True, "distributable": True, "violations": []}
    assert bad["valid"] is False and bad["distributable"] is False
    expected = {"code": "cap.required", "path": "sender", "detail": "<sender> is required in <alert>", "rule": "CAP 1.2 schema"}
    assert expected in bad["violations"]


def test_json_documents_are_checked_too(tmp_path: Path) -> None:
    document = tmp_path / "alert.json"
    document.write_text(json.dumps(to_json(parse_xml(GOOD.read_bytes()))))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = CliRunner().invoke(cap, ["validate", str(document), str(garbage)])
    assert result.exit_code == 1
    assert f"{document}: valid CAP 1.2" in result.output
    assert f"{garbage}: cap.not-json at alert (CAP 1.2 schema)" in result.output


def test_missing_file_is_a_usage_error() -> None:
    result = CliRunner().invoke(cap, ["validate", "/nonexistent/alert.xml"])
    assert result.exit_code == 2


def test_valid_cap_that_tocsin_would_not_distribute_exits_three(tmp_path: Path) -> None:
    cancel = tmp_path / "cancel.xml"
    cancel.write_bytes(TSUNAMI_CANCEL)
    result = CliRunner().invoke(cap, ["validate", str(cancel)])
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{cancel}: valid CAP 1.2, not distributed by tocsin"
    assert f"{cancel}: cap.expired at info (tocsin policy): expired at 2024-05-01T10:00:00+00:00" in lines
    assert any("cap.expires-before-sent at info[0].expires (tocsin policy)" in line for line in lines)


def test_time_policies_are_judged_at_the_time_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "alert.xml"
    path.write_bytes(minimal(area_extra="<circle>48.85,2.35 5</circle>"))  # sent 10:00, expires 12:00 (+02:00)
    at = {when: CliRunner().invoke(cap, ["validate", "--json", "--at", when, str(path)]) for when in
          ("sent", "2024-05-01T11:00:00+02:00", "2024-05-01T13:00:00+02:00", "now")}
    assert {when: result.exit_code for when, result in at.items()} == {
        "sent": 0, "2024-05-01T11:00:00+02:00": 0, "2024-05-01T13:00:00+02:00": 3, "now": 3}
    [late] = json.loads(at["now"].output)["violations"]
    assert (late["code"], late["rule"]) == ("cap.expired", "tocsin policy")
    assert CliRunner().invoke(cap, ["validate", "--at", "2024-05-01T13:00:00", str(path)]).exit_code == 2


def test_a_document_tocsin_will_not_read_is_not_called_valid_or_invalid_cap() -> None:
    xxe = CAP_DATA / "invalid" / "synthetic-google-xxe-doctype.xml"
    result = CliRunner().invoke(cap, ["validate", "--json", str(xxe)])
    assert result.exit_code == 3
    report = json.loads(result.output)
    assert report["valid"] is None and report["distributable"] is False
    assert [(v["code"], v["rule"]) for v in report["violations"]] == [("cap.doctype-forbidden", "tocsin policy")]
