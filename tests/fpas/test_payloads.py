"""What each alert becomes for an FPAS client, and the bounding box's bounds (no I/O)."""

from __future__ import annotations

import json
import time

import pytest

from tocsin.api.fpas import Box, box_cells, box_of
from tocsin.channels.fpas import MAX_REMOVED, payloads_for
from tocsin.delivery.model import FPAS, Delivery, Push
from tocsin.errors import Rejected
from tocsin.geo.cells import tally


def _push(msg_type: str, references: tuple[str, ...] = ()) -> Push:
    delivery = Delivery(alert_id="a" * 32, seq=7, channel=FPAS, destination="fpas_x", expires_at=time.time() + 60,
                        urgent=False)
    return Push(delivery=delivery, target={}, payload=b"", pointer=b"", topic="", severity="Severe",
                status="Actual", ttl_s=60, msg_type=msg_type, references=references)


def _documents(push: Push) -> list[dict[str, str]]:
    return [json.loads(body) for body in payloads_for(push)]


def test_an_alert_is_added_an_update_replaces_and_a_cancel_removes() -> None:
    assert _documents(_push("Alert")) == [{"type": "added", "alert_id": "a" * 32}]
    assert _documents(_push("Update", ("b" * 32,))) == [
        {"type": "update", "alert_id": "a" * 32}, {"type": "removed", "alert_id": "b" * 32}]
    assert _documents(_push("Cancel", ("b" * 32, "c" * 32))) == [
        {"type": "removed", "alert_id": "b" * 32}, {"type": "removed", "alert_id": "c" * 32}]
    assert _documents(_push("Cancel")) == [{"type": "removed", "alert_id": "a" * 32}]


def test_an_update_naming_many_alerts_removes_a_bounded_number() -> None:
    many = tuple(f"{i:032x}" for i in range(50))
    assert len(payloads_for(_push("Cancel", many))) == MAX_REMOVED


def test_coordinates_are_read_as_numbers_or_decimal_strings() -> None:
    assert box_of({"min_lat": "48.8", "max_lat": 48.9, "min_lon": "2.2", "max_lon": 2.4}) == Box(
        min_lat=48.8, max_lat=48.9, min_lon=2.2, max_lon=2.4)
    for bad in ({"min_lat": "nan"}, {"min_lat": True}, {"min_lat": "1" * 40}, {"max_lon": -179.0}):
        with pytest.raises(Rejected):
            box_of({"min_lat": 48.8, "max_lat": 48.9, "min_lon": 2.2, "max_lon": 2.4, **bad})


def test_a_box_is_refused_from_its_area_before_it_is_covered() -> None:
    world = Box(min_lat=-89.0, max_lat=89.0, min_lon=-179.0, max_lon=179.0)
    computed = tally.computed
    with pytest.raises(Rejected) as refused:
        box_cells(world, 64)
    assert refused.value.problem.code == "fpas.box-too-large"
    assert tally.computed == computed  # no cover of the world was computed
    small = box_cells(Box(min_lat=48.85, max_lat=48.851, min_lon=2.35, max_lon=2.351), 64)
    assert len(small) == 1  # a box smaller than a cell still has the cell it lies in
