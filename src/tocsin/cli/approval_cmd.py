"""`tocsin pending|approve|reject|correct`: the two-person rule from a terminal, over the API."""

from __future__ import annotations

from typing import Any

import click

from tocsin.cli.accounts_cmd import common, run


def _submission_line(s: dict[str, Any]) -> str:
    return f"{s['id']}\t{s['state']}\t{s['status']}\t{s['author']}\t{s['submittedAt']}\texpires {s['expires']}"


def _alert_line(a: dict[str, Any]) -> str:
    return f"{a['id']}\t{a['state']}\t{a['status']} {a['msgType']}\t{a['sender']} {a['identifier']}\tseq {a['seq']}"


@click.command()
@click.option("--state", default="pending", help="pending, approved, rejected, expired, ...")
@common
def pending(state: str, urls: list[str], token: str, as_json: bool) -> None:
    """List your organisation's submissions in this state (first page)."""
    run(urls, token, as_json, "GET", "/api/v1/alerts", params={"state": state},
        show=lambda page: "\n".join(_submission_line(s) for s in page["alerts"]) or f"no {state} alert")


@click.command()
@click.argument("alert_id")
@common
def approve(alert_id: str, urls: list[str], token: str, as_json: bool) -> None:
    """Approve a pending alert (approver role; not its author): it is published at once."""
    run(urls, token, as_json, "POST", f"/api/v1/alerts/{alert_id}/approve", show=_alert_line)


@click.command()
@click.argument("alert_id")
@click.option("--reason", required=True, help="Why it is refused (kept in the audit log).")
@common
def reject(alert_id: str, reason: str, urls: list[str], token: str, as_json: bool) -> None:
    """Reject a pending alert: it is never published."""
    run(urls, token, as_json, "POST", f"/api/v1/alerts/{alert_id}/reject", body={"reason": reason},
        show=_submission_line)


@click.command()
@click.argument("alert_id")
@common
def correct(alert_id: str, urls: list[str], token: str, as_json: bool) -> None:
    """Publish at once the "false alert, disregard" correction of a published alert."""
    run(urls, token, as_json, "POST", f"/api/v1/alerts/{alert_id}/correct", show=_alert_line)
