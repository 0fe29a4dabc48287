"""`tocsin cap ...`: check CAP 1.2 documents with the same code the service accepts them with."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tocsin.cap.parse import parse_json, parse_xml
from tocsin.errors import CAP_NOT_JSON, CapInvalid, Violation


def _violations(path: Path) -> tuple[Violation, ...]:
    """What is wrong with one file: XML, or the JSON form when the name ends in .json."""
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            parse_json(json.loads(data))
        else:
            parse_xml(data)
    except CapInvalid as invalid:
        return invalid.violations
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        return (Violation(problem=CAP_NOT_JSON, path="alert", detail=str(exc)),)
    return ()


@click.group(name="cap")
def cap() -> None:
    """Work with CAP 1.2 alert messages."""


@cap.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check each FILE against every CAP 1.2 rule; exit 1 when any file breaks one."""
    all_valid = True
    for path in files:
        violations = _violations(path)
        all_valid = all_valid and not violations
        if as_json:
            report = {"file": str(path), "valid": not violations, "violations": [v.as_dict() for v in violations]}
            click.echo(json.dumps(report, ensure_ascii=False))
        elif not violations:
            click.echo(f"{path}: valid")
        for violation in () if as_json else violations:
            click.echo(f"{path}: {violation.problem.code} at {violation.path}: {violation.detail}")
    if not all_valid:
        raise click.exceptions.Exit(1)
