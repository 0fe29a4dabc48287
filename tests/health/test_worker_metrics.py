"""The node's /metrics over several workers (health/workers.py): what sums and what does not."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tocsin.health.workers import merge_metrics


def _worker(accepted: int, connected: int, ready: int, canary_age: float) -> str:
    registry = CollectorRegistry()
    Counter("tocsin_alerts_accepted_total", "", ["status"], registry=registry).labels("Actual").inc(accepted)
    Gauge("tocsin_connected_devices", "", ["channel"], registry=registry).labels("sse").set(connected)
    Gauge("tocsin_ready", "", registry=registry).set(ready)
    Gauge("tocsin_canary_age_seconds", "", registry=registry).set(canary_age)
    return generate_latest(registry).decode()


def _samples(text: bytes) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.decode().splitlines() if line and not line.startswith("#")}


def test_counters_and_devices_add_up_readiness_is_the_least_and_canary_age_the_greatest() -> None:
    first, second = _worker(3, 10, 1, 0.5), _worker(4, 20, 0, 7.0)
    merged = _samples(merge_metrics([first, second], configured=3))
    assert merged['tocsin_alerts_accepted_total{status="Actual"}'] == 7
    assert merged['tocsin_connected_devices{channel="sse"}'] == 30
    assert merged["tocsin_ready"] == 0  # one worker not ready: the node is not
    assert merged["tocsin_canary_age_seconds"] == 7.0
    created = [v for k, v in merged.items() if k.startswith("tocsin_alerts_accepted_created")]
    assert created and created[0] <= min(_samples(t.encode())[k] for t in (first, second)
                                          for k in _samples(t.encode()) if k.startswith("tocsin_alerts_accepted_created"))
    assert merged['tocsin_workers{state="configured"}'] == 3 and merged['tocsin_workers{state="answering"}'] == 2
