"""`tocsin cap ...`: check CAP 1.2 documents with the same code the service accepts them with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_json, parse_xml
from tocsin.errors import CAP_NOT_JSON, CapInvalid, Violation
from tocsin.policy import findings
from tocsin.settings import Settings

# Exit codes of `tocsin cap validate` (docs/api.md); 2 is click's usage error.
VALID = 0
INVALID_CAP = 1
NOT_DISTRIBUTED = 3

# What each kind of finding is: a rule of CAP 1.2, or tocsin's own policy.
RULES = {
    "schema": "CAP 1.2 schema",
    "semantic": "CAP 1.2 text",
    "policy": "tocsin policy",
}


def _read(path: Path) -> tuple[Alert | None, tuple[Violation, ...]]:
    """The alert in one file (XML, or the JSON form when the name ends in .json), or what is wrong."""
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            return parse_json(json.loads(data)), ()
        return parse_xml(data), ()
    except CapInvalid as invalid:
        return None, invalid.violations
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        return None, (Violation(problem=CAP_NOT_JSON, path="alert", detail=str(exc)),)


def _is_cap_rule(violation: Violation) -> bool:
    return violation.kind != "policy"


def _verdict(path: Path, at: datetime | None, max_skew_s: float) -> tuple[bool | None, list[Violation]]:
    """Whether the file is valid CAP 1.2 (None: tocsin would not read it, so it was not judged),
    and every finding: CAP rules broken, else tocsin's policies at `at` (None: at its sent time)."""
    alert, violations = _read(path)
    if alert is None:
        return (False if any(_is_cap_rule(v) for v in violations) else None), list(violations)
    return True, findings(alert, now=alert.sent if at is None else at, max_skew_s=max_skew_s)


def _summary(valid_cap: bool | None, found: list[Violation]) -> str:
    if valid_cap is None:
        return "not read by tocsin, so not judged against CAP 1.2"
    if not valid_cap:
        return "not valid CAP 1.2"
    return "valid CAP 1.2, not distributed by tocsin" if found else "valid CAP 1.2"


def _moment(text: str) -> datetime | None:
    if text == "sent":
        return None
    if text == "now":
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not 'sent', 'now' or an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{text!r} needs a UTC offset, such as +00:00")
    return moment


@click.group(name="cap")
def cap() -> None:
    """Work with CAP 1.2 alert messages."""


@cap.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
@click.option("--at", "at_text", default="sent", show_default=True, metavar="sent|now|DATETIME",
              help="When to judge tocsin's time policies (expired, sent in the future): at each "
                   "alert's own sent time, now, or at an ISO 8601 date-time with its offset.")
def validate(files: tuple[Path, ...], as_json: bool, at_text: str) -> None:
    """Check each FILE against CAP 1.2, then against what tocsin distributes.

    Each finding says whether it breaks a CAP 1.2 rule (the schema or the standard's text) or
    a tocsin policy. Exit 0 when tocsin would distribute every file, 1 when any file breaks a
    CAP 1.2 rule, 3 when none does but tocsin would refuse (or not read) one.
    """
    at = _moment(at_text)
    max_skew_s = Settings.from_env().max_clock_skew_s
    code = VALID
    for path in files:
        valid_cap, found = _verdict(path, at, max_skew_s)
        if valid_cap is False:
            code = INVALID_CAP
        elif found and code == VALID:
            code = NOT_DISTRIBUTED
        if as_json:
            report = {
                "file": str(path), "valid": valid_cap, "distributable": bool(valid_cap) and not found,
                "violations": [{**v.as_dict(), "rule": RULES[v.kind]} for v in found],
            }
            click.echo(json.dumps(report, ensure_ascii=False))
            continue
        click.echo(f"{path}: {_summary(valid_cap, found)}")
        for violation in found:
            click.echo(f"{path}: {violation.problem.code} at {violation.path} ({RULES[violation.kind]}): {violation.detail}")
    if code != VALID:
        raise click.exceptions.Exit(code)
