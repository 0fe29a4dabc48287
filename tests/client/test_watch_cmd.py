"""`tocsin watch`: arguments and output lines."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tocsin.cli.watch_cmd import _places, json_line, render, watch
from tocsin.client.places import MAX_PLACES
from tocsin.client.watch import Display

from .cap_samples import NOW, alert, info


def _display(status: str = "Actual") -> Display:
    value = alert()
    return Display(
        identifier="A-1", sender="pref@x", sent=NOW, status=status, msg_type="Alert",
        event="Inondation", headline="Crue", language="fr-FR", alert_id="al_1", seq=3,
        node="http://a", displayed_at=NOW + timedelta(seconds=1.5), delay_s=1.5,
        expires=NOW + timedelta(hours=1), alert=value, info=info(),
    )


def test_real_alert_line_has_no_tag() -> None:
    line = render(_display())
    assert line.startswith("Inondation: Crue [pref@x A-1, fr-FR, after 1.5 s via http://a]")


@pytest.mark.parametrize("status", ["Test", "Exercise", "System"])
def test_other_statuses_are_loud(status: str) -> None:
    assert render(_display(status)).startswith(f"[{status.upper()}] ")


def test_json_line_carries_no_control_character_raw() -> None:
    hostile = replace(_display(), headline="\x9b2J\x1b[31mEVACUATE\u202e")
    line = json_line(hostile)
    assert line.isascii() and "\x1b" not in line and "\x9b" not in line
    assert json.loads(line)["headline"] == "\x9b2J\x1b[31mEVACUATE\u202e"  # nothing lost, only escaped


def test_json_line_fields() -> None:
    fields = _display().as_json()
    for name in ("identifier", "sender", "sent", "status", "msgType", "event", "headline",
                 "language", "delay_s", "id", "seq", "node"):
        assert name in fields
    assert replace(_display(), seq=4).as_json()["seq"] == 4


def test_places_from_lat_lon_and_place() -> None:
    assert [p.point for p in _places(48.85, 2.35, ("45.76,4.83",))] == [(48.85, 2.35), (45.76, 4.83)]


def test_named_places_keep_their_names() -> None:
    found = _places(None, None, ("Nice=43.70,7.27", "Gare de Lyon=48.8443,2.3744", "45.76,4.83"))
    assert [(p.name, p.lat, p.lon) for p in found] == [
        ("Nice", 43.70, 7.27), ("Gare de Lyon", 48.8443, 2.3744), ("45.76,4.83", 45.76, 4.83)]
    assert _places(48.85, 2.35, ())[0].name == "here"


def test_more_places_than_the_bound_is_a_usage_error() -> None:
    args = ["--url", "http://a"] + [f"--place=P{n}=45.{n:02d},4.8" for n in range(MAX_PLACES + 1)]
    result = CliRunner().invoke(watch, args)
    assert result.exit_code == 2 and f"at most {MAX_PLACES}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "http://a"],
        ["--url", "http://a", "--lat", "48.8"],
        ["--url", "http://a", "--place", "48.8"],
        ["--url", "http://a", "--place", "91,2"],
        ["--url", "http://a", "--place", "Nice=43.7"],
        ["--url", "http://a", "--place", "Nice=nan,7"],
        ["--url", "http://a", "--place", "Nice=43.7,inf"],
    ],
)
def test_missing_or_bad_place_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(watch, args)
    assert result.exit_code == 2


def test_missing_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOCSIN_URL", raising=False)
    result = CliRunner().invoke(watch, ["--place", "48.8,2.3"])
    assert result.exit_code == 2 and "TOCSIN_URL" in result.output


def test_unreadable_state_file_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("garbage")
    result = CliRunner().invoke(watch, ["--url", "http://a", "--place", "48.8,2.3", "--state", str(state)])
    assert result.exit_code == 1 and "state file" in result.output


def test_plain_http_to_another_host_is_named_and_loopback_is_not() -> None:
    from tocsin.cli.watch_cmd import plain_remote_urls

    urls = ["http://alerts.example", "https://alerts.example", "http://127.0.0.1:8080", "http://[::1]:8080",
            "http://localhost:8080", "http://10.0.0.2:8080"]
    assert plain_remote_urls(urls) == ["http://alerts.example", "http://10.0.0.2:8080"]


def test_watch_without_keys_or_trust_on_first_use_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(watch, ["--url", "http://alerts.example", "--place", "48.85,2.35"],
                                env={"TOCSIN_KEYS": ""})
    assert result.exit_code == 2
    assert "plain HTTP" in result.output and "trust on first use" in result.output
    (tmp_path / "keys.json").write_text('{"keys": []}')
    result = CliRunner().invoke(watch, ["--url", "https://a", "--place", "48.85,2.35",
                                        "--keys", str(tmp_path / "keys.json")])
    assert result.exit_code == 2 and "holds no Ed25519 key" in result.output
