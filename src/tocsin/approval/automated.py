"""An accounts file declaring one automated source: how fleets that start nodes as
subprocesses (the fault suite, benches, the drill, local clusters) get a token whose Actual
alerts are published at once, with no second person (docs/lifecycle.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tocsin.cap.model import Severity

AUTOMATED_ORG = "automated-source"


def automated_source_toml(token: str, *, org: str = AUTOMATED_ORG, client: str = "feed") -> str:
    """The accounts file's text: one organisation, approval none, one API client (its
    token named by its SHA-256 only)."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    severities = ", ".join(f'"{s.value}"' for s in Severity)
    return (
        "[[issuers]]\n"
        f'name = "{org}"\n'
        'senders = ["*"]\n'
        'statuses = ["Actual", "Exercise", "Test"]\n'
        f"severities = [{severities}]\n"
        'approval = { mode = "none" }\n\n'
        "[[issuers.clients]]\n"
        f'name = "{client}"\n'
        'roles = ["author"]\n'
        f'token_sha256 = "{digest}"\n'
    )


def write_automated_source(path: Path, token: str, *, org: str = AUTOMATED_ORG) -> Path:
    """Write the accounts file at `path` (owner-only) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(automated_source_toml(token, org=org), encoding="utf-8")
    path.chmod(0o600)
    return path
