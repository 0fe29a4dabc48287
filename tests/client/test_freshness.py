"""The rule both clients follow: leave a node whose keepalives say it stopped delivering,
only for a node that is ready."""

from __future__ import annotations

import httpx

from tocsin.client.freshness import MIN_SILENCE_S, Freshness, DeliveringNodes, move_target

A, B, C = "http://a", "http://b", "http://c"


def test_freshness_reads_a_keepalive_and_ignores_junk() -> None:
    f = Freshness.from_json({"node": "n1", "interval_s": 2, "canary_age_s": 5.5, "stale_after_s": 4.0})
    assert f == Freshness(node="n1", interval_s=2.0, canary_age_s=5.5, stale_after_s=4.0)
    assert f.is_stale
    junk = Freshness.from_json({"node": 7, "interval_s": "2", "canary_age_s": True, "stale_after_s": None})
    assert junk == Freshness()
    assert not junk.is_stale  # an older node says nothing: only silence moves the device


def test_a_node_within_its_limit_is_not_stale() -> None:
    assert not Freshness(canary_age_s=3.9, stale_after_s=4.0).is_stale
    assert not Freshness(canary_age_s=100.0).is_stale  # no limit given: no judgement


def test_silence_limit_is_three_intervals_with_a_floor() -> None:
    assert Freshness(interval_s=2.5).silence_limit_s(45.0) == 7.5
    assert Freshness(interval_s=0.2).silence_limit_s(45.0) == MIN_SILENCE_S
    assert Freshness().silence_limit_s(45.0) == 45.0


def readyz(ready: set[str], asked: list[str]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/readyz"
        url = f"{request.url.scheme}://{request.url.host}"
        asked.append(url)
        return httpx.Response(200 if url in ready else 503, json={"ready": url in ready})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


STALE = Freshness(canary_age_s=9.0, stale_after_s=4.0)


async def test_a_stale_node_is_left_for_the_first_ready_other() -> None:
    asked: list[str] = []
    async with readyz({C}, asked) as http:
        assert await move_target(STALE, A, [A, B, C], DeliveringNodes(http)) == C
    assert sorted(asked) == [B, C]  # never its own node


async def test_nobody_moves_when_no_other_node_is_ready() -> None:
    asked: list[str] = []
    async with readyz(set(), asked) as http:
        assert await move_target(STALE, A, [A, B, C], DeliveringNodes(http)) is None


async def test_a_fresh_node_is_not_left_and_nothing_is_asked() -> None:
    asked: list[str] = []
    async with readyz({B}, asked) as http:
        assert await move_target(Freshness(canary_age_s=1.0, stale_after_s=4.0), A, [A, B], DeliveringNodes(http)) is None
    assert asked == []


async def test_readiness_answers_are_shared_for_their_ttl() -> None:
    """Hundreds of devices on one bad node ask each other node once per ttl, not each."""
    asked: list[str] = []
    now = [0.0]
    async with readyz({B}, asked) as http:
        ready = DeliveringNodes(http, ttl_s=1.0, monotonic=lambda: now[0])
        for _ in range(100):
            assert await ready.delivering_among([B, C]) == [B]
        assert sorted(asked) == [B, C]
        now[0] = 1.5
        await ready.delivering_among([B, C])
        assert len(asked) == 4


async def test_a_red_node_whose_canary_is_fresh_still_delivers() -> None:
    """Red for a consumer check while a peer is cut off (F06), yet its probes arrive."""
    def red(request: httpx.Request) -> httpx.Response:
        fresh = request.url.host == "b"
        return httpx.Response(503, json={"ready": False, "failing": ["consumers"],
                                         "checks": {"canary": {"ok": fresh}, "consumers": {"ok": False}}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(red)) as http:
        assert await move_target(STALE, A, [A, B, C], DeliveringNodes(http)) == B
        assert not await DeliveringNodes(http).is_delivering(C)


async def test_a_red_node_judged_by_the_canary_of_the_devices_channel() -> None:
    """Web Push late on every node (a planner cut off with the one plan in flight): a live
    device still moves to a node whose SSE canary is fresh, and not to one whose is not."""
    def red(request: httpx.Request) -> httpx.Response:
        sse_fresh = request.url.host == "c"
        return httpx.Response(503, json={"ready": False, "failing": ["canary", "canary:webpush"], "checks": {
            "canary": {"ok": False}, "canary:webpush": {"ok": False}, "canary:sse": {"ok": sse_fresh}}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(red)) as http:
        assert await move_target(STALE, A, [A, B, C], DeliveringNodes(http)) == C
        assert not await DeliveringNodes(http).is_delivering(B)
        assert not await DeliveringNodes(http, channel="webpush").is_delivering(C)


async def test_an_unreachable_node_is_not_ready() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        assert not await DeliveringNodes(http).is_delivering(B)
