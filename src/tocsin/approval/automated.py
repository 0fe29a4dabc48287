"""An accounts file declaring one automated source: how fleets that start nodes as
subprocesses (the fault suite, benches, the drill, local clusters) get a token whose Actual
alerts are published at once, with no second person (docs/lifecycle.md); and, for the fault
suite, a duty room whose Actual alerts wait for a second person (an author and an approver)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tocsin.cap.model import Severity

AUTOMATED_ORG = "automated-source"
PEOPLE_ORG = "duty-room"


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


def people_toml(author_token: str, approver_token: str, *, org: str = PEOPLE_ORG) -> str:
    """An organisation of people (approval always): user `author` and user `approver`."""
    users = "".join(
        f'\n[[issuers.users]]\nname = "{name}"\nroles = ["{name}"]\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for name, token in (("author", author_token), ("approver", approver_token))
    )
    severities = ", ".join(f'"{s.value}"' for s in Severity)
    return (
        f'\n[[issuers]]\nname = "{org}"\nsenders = ["*"]\nstatuses = ["Actual", "Exercise", "Test"]\n'
        f'severities = [{severities}]\napproval = {{ mode = "always" }}\n{users}'
    )


def write_automated_source(path: Path, token: str, *, org: str = AUTOMATED_ORG,
                           people: tuple[str, str] | None = None) -> Path:
    """Write the accounts file at `path` (owner-only) and return it; `people`: the tokens of
    a duty room's author and approver, declared too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = automated_source_toml(token, org=org) + (people_toml(*people) if people else "")
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path
