"""Drafts kept for the console: an organisation's unsent alerts, in the pending bucket.

A draft is only kept, never checked or published from here: the console posts it as an
alert when its author sends it. An organisation keeps at most `max_per_org`, each for
`keep_s` after it was last saved.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from tocsin.errors import TOO_MANY_DRAFTS, Rejected
from tocsin.store.base import Records

# The ids this module gives (uuid4 hex); nothing else can name a draft (nor a bucket key).
DRAFT_ID = re.compile(r"[0-9a-f]{32}")


class Drafts:
    """The drafts of one alert stream's deployment."""

    def __init__(self, records: Records, stream: str, mirror: Mapping[str, dict[str, Any]], *,
                 max_per_org: int, keep_s: float) -> None:
        self._records = records
        self._stream = stream
        self._mirror = mirror
        self._max = max_per_org
        self._keep_s = keep_s

    def _prefix(self, org: str) -> str:
        # The organisation as a key-safe token: a name may hold any character.
        return f"{self._stream}.draft.{hashlib.sha256(org.encode()).hexdigest()[:24]}."

    def of(self, org: str) -> list[dict[str, Any]]:
        """The organisation's drafts (from the node's mirror), newest first."""
        prefix = self._prefix(org)
        found = [dict(v) for k, v in list(self._mirror.items()) if k.startswith(prefix)]
        return sorted(found, key=lambda d: str(d.get("savedAt", "")), reverse=True)

    async def get(self, org: str, draft_id: str) -> dict[str, Any] | None:
        if not DRAFT_ID.fullmatch(draft_id):
            return None
        return await self._records.get(self._prefix(org) + draft_id)

    async def save(self, org: str, draft: dict[str, Any], draft_id: str | None) -> str:
        """Keep the draft (replacing the one with `draft_id`, else a new one); its id.

        Raises:
            Rejected: 409 draft.too-many when a new one would pass the organisation's cap.
        """
        if draft_id is None or await self.get(org, draft_id) is None:
            kept = len(self.of(org))
            if kept >= self._max:
                raise Rejected(TOO_MANY_DRAFTS, f"{org!r} keeps {kept} drafts; the limit is {self._max}")
            draft_id = uuid.uuid4().hex
            await self._records.create(self._prefix(org) + draft_id, {**draft, "id": draft_id}, ttl_s=self._keep_s)
            return draft_id
        found = await self._records.get_versioned(self._prefix(org) + draft_id)
        revision = found[1] if found else 0
        await self._records.replace(self._prefix(org) + draft_id, {**draft, "id": draft_id}, revision,
                                    ttl_s=self._keep_s)
        return draft_id

    async def delete(self, org: str, draft_id: str) -> None:
        await self._records.delete(self._prefix(org) + draft_id)
