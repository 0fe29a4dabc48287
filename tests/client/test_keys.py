"""Which keys a watcher trusts: configured ones, statements signed by them, never a node's say-so."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tocsin.client.backoff import Backoff
from tocsin.client.keys import NoTrustedKeys, accept_statements, load_key_file, KeyFileInvalid
from tocsin.client.state import load_state
from tocsin.client.watch import Display, Watcher
from tocsin.signing import SigningKey, key_statement, with_validity

from .cap_samples import NOW, PARIS, cap_xml
from .fake_node import FakeNode, sse_alert


def _now() -> datetime:
    return NOW + timedelta(seconds=2)


async def _no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


def _watcher(node: FakeNode, trusted: SigningKey | None, **options: object) -> Watcher:
    keys = None if trusted is None else {trusted.kid: trusted.public_jwk()}
    return Watcher(["http://a"], [PARIS], transport=node.transport(), now=_now, sleep=_no_sleep,
                   backoff=Backoff(rng=random.Random(0)), keys=keys, **options)  # type: ignore[arg-type]


async def _next(w: Watcher) -> Display:
    async with asyncio.timeout(2):
        return await anext(aiter(w.displays()))


async def _until(condition: object, w: Watcher) -> None:
    async with asyncio.timeout(2):
        while not condition(w):  # type: ignore[operator]
            await asyncio.sleep(0.01)


def _rotation(old: SigningKey, new: SigningKey, *, at: datetime = NOW, signer: SigningKey | None = None) -> dict[str, str]:
    keys = [with_validity(old.public_jwk(), not_after=at + timedelta(days=30)),
            with_validity(new.public_jwk(), not_before=at - timedelta(minutes=1))]
    return key_statement(signer or old, keys, at)


async def test_a_statement_signed_by_the_trusted_key_brings_its_new_key(tmp_path: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    node = FakeNode(key=new)
    node.statements = [_rotation(old, new)]
    node.scripts = [sse_alert(1, cap_xml(identifier="NEW-KEY"), new)]
    async with _watcher(node, old, state_path=tmp_path / "s.json") as w:
        display = await _next(w)
    assert display.identifier == "NEW-KEY"
    saved = load_state(tmp_path / "s.json")
    assert set(saved.keys) == {old.kid, new.kid}
    assert saved.keys[old.kid]["not_after"] == (NOW + timedelta(days=30)).isoformat()
    assert saved.key_set_at == NOW


async def test_an_alert_by_an_unknown_key_makes_the_watcher_read_the_statements(tmp_path: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    node = FakeNode(key=old)
    node.scripts = [sse_alert(1, cap_xml(identifier="OLD"), old)]
    async with _watcher(node, old, state_path=tmp_path / "s.json") as w:
        assert (await _next(w)).identifier == "OLD"
    # The deployment rotates; the device, already registered, meets the new key mid-stream.
    node.statements = [_rotation(old, new)]
    node.scripts = [sse_alert(2, cap_xml(identifier="NEW"), new)]
    async with _watcher(node, old, state_path=tmp_path / "s.json") as w:
        assert (await _next(w)).identifier == "NEW"
    assert len(node.registrations) == 1 and w.stats.bad_signatures == 0


@pytest.mark.parametrize("how", ["signed by the new key", "signed by a stranger", "bad signature", "unsigned"])
async def test_a_statement_not_signed_by_a_trusted_key_is_refused(how: str) -> None:
    old, new, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    statement = _rotation(old, new, signer={"signed by the new key": new, "signed by a stranger": stranger}.get(how))
    if how == "bad signature":
        statement["sig"] = old.sign(b"something else")
    if how == "unsigned":
        statement = {"statement": statement["statement"]}
    node = FakeNode(key=new)
    node.statements = [statement]
    node.scripts = [sse_alert(1, cap_xml(identifier="FORGED"), new) + sse_alert(2, cap_xml(identifier="REAL"), old)]
    async with _watcher(node, old) as w:
        display = await _next(w)
    assert display.identifier == "REAL"
    assert w.stats.bad_signatures == 1
    assert w.stats.statements_refused == 1
    assert set(w.state.keys) == {old.kid}


async def test_an_expired_key_stops_verifying() -> None:
    key = SigningKey.generate()
    expired = with_validity(key.public_jwk(), not_after=_now() - timedelta(seconds=1))
    node = FakeNode(key=key)
    node.scripts = [sse_alert(1, cap_xml(identifier="LATE"), key)]
    watcher = Watcher(["http://a"], [PARIS], transport=node.transport(), now=_now, sleep=_no_sleep,
                      keys={key.kid: expired})
    async with watcher as w:
        await _until(lambda w: w.stats.bad_signatures == 1, w)
    assert w.stats.verdicts == {}
    # Not yet valid is refused the same way.
    early = with_validity(key.public_jwk(), not_before=_now() + timedelta(hours=1))
    node.scripts = [sse_alert(1, cap_xml(identifier="EARLY"), key)]
    async with Watcher(["http://a"], [PARIS], transport=node.transport(), now=_now, sleep=_no_sleep,
                       keys={key.kid: early}) as w:
        await _until(lambda w: w.stats.bad_signatures == 1, w)


async def test_a_node_serving_other_keys_brings_no_trust_even_after_a_401() -> None:
    trusted, rogue = SigningKey.generate(), SigningKey.generate()
    node = FakeNode(key=rogue, extra_keys=[trusted.public_jwk()])
    node.scripts = [sse_alert(1, cap_xml(identifier="FORGED-1"), rogue), 401,
                    sse_alert(1, cap_xml(identifier="FORGED-2"), rogue)
                    + sse_alert(2, cap_xml(identifier="REAL"), trusted)]
    async with _watcher(node, trusted) as w:
        display = await _next(w)
    assert display.identifier == "REAL"
    assert len(node.registrations) == 2 and w.stats.bad_signatures == 2
    assert set(w.state.keys) == {trusted.kid}


async def test_trust_on_first_use_pins_once_and_a_re_registration_adds_nothing() -> None:
    first, later = SigningKey.generate(), SigningKey.generate()
    node = FakeNode(key=first)
    node.scripts = [sse_alert(1, cap_xml(identifier="A-1"), first), 401,
                    sse_alert(1, cap_xml(identifier="FORGED"), later) + sse_alert(2, cap_xml(identifier="A-2"), first)]
    async with _watcher(node, None, trust_on_first_use=True) as w:
        assert (await _next(w)).identifier == "A-1"
        node.key = later  # the node now serves another key: a 401 must not bring it in
        assert (await _next(w)).identifier == "A-2"
    assert len(node.registrations) == 2
    assert set(w.state.keys) == {first.kid}


def test_no_key_and_no_trust_on_first_use_is_refused() -> None:
    with pytest.raises(NoTrustedKeys):
        Watcher(["http://a"], [PARIS])


def test_statements_apply_oldest_first_and_a_replay_changes_nothing() -> None:
    a, b, c = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    first = _rotation(a, b, at=NOW)
    second = key_statement(b, [b.public_jwk(), c.public_jwk()], NOW + timedelta(days=1))
    now = NOW + timedelta(days=2)
    accepted = accept_statements({a.kid: a.public_jwk()}, None, [second, first], now)
    assert set(accepted.keys) == {b.kid, c.kid} and accepted.retired == (a.kid,)
    assert accepted.since == NOW + timedelta(days=1) and accepted.refused == 0
    # The older statement, served again, cannot bring the retired key back.
    again = accept_statements(accepted.keys, accepted.since, [first], now)
    assert again.keys == accepted.keys and again.since == accepted.since


def test_key_files_are_read_as_nodes_serve_them(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [key.public_jwk()]}))
    assert set(load_key_file(path)) == {key.kid}
    mislabelled = dict(key.public_jwk(), kid="0" * 16)
    path.write_text(json.dumps({"keys": [mislabelled]}))
    with pytest.raises(KeyFileInvalid):
        load_key_file(path)
    with pytest.raises(KeyFileInvalid):
        load_key_file(tmp_path / "missing.json")
