"""Route records, the book the planner reads, and what a downstream's answer means."""

from __future__ import annotations

import email.utils

import pytest

from tocsin.delivery.model import Outcome
from tocsin.delivery.route_worker import classify, retry_after_s
from tocsin.delivery.routes import Route, RouteBook, check_url
from tocsin.errors import Rejected


def _record(name: str, statuses: list[str], *, enabled: bool = True) -> dict[str, object]:
    return Route(name=name, url=f"https://{name}.example/cap", statuses=tuple(statuses), enabled=enabled).as_json()


def test_the_book_names_the_enabled_routes_of_a_status_and_never_for_draft() -> None:
    book = RouteBook()
    book["cbc"] = _record("cbc", ["Actual"])
    book["aggregator"] = _record("aggregator", ["Actual", "Exercise", "Test"])
    book["paused"] = _record("paused", ["Actual"], enabled=False)
    book["broken"] = {"name": "broken", "url": "ftp://x", "statuses": ["Actual"]}  # routes nothing
    book["other"] = _record("elsewhere", ["Actual"])  # a record under another key: routes nothing
    assert book.names_for("Actual") == ["aggregator", "cbc"]
    assert book.names_for("Test") == ["aggregator"]
    assert book.names_for("Draft") == [] and book.names_for("System") == []
    del book["cbc"]
    assert book.names_for("Actual") == ["aggregator"] and len(book) == 4


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080/cap", "https://[2001:db8::1]/in", "https://gw.example.org/a?b=c",
                                 "https://gw.example.org"])
def test_urls_a_deployment_may_route_to(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url", ["https://gw..example/", "https://-gw.example/", "https://gw.example:0/", "//gw.example/",
                                 "https://gw.example/\u00e9", "https://[::1/"])
def test_what_is_not_a_url_is_refused(url: str) -> None:
    with pytest.raises(Rejected) as refused:
        check_url(url)
    assert refused.value.problem.code == "route.invalid"


def test_retry_after_in_seconds_or_as_a_date_bounded() -> None:
    assert retry_after_s("7", now=0) == 7.0
    assert retry_after_s("99999999", now=0) == 86400.0
    assert retry_after_s(email.utils.formatdate(1000 + 30, usegmt=True), now=1000) == 30.0
    assert retry_after_s(email.utils.formatdate(900, usegmt=True), now=1000) == 0.0
    assert retry_after_s("soon", now=0) is None and retry_after_s(None, now=0) is None
    assert retry_after_s("-5", now=0) is None


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.SENT), (202, Outcome.SENT), (204, Outcome.SENT), (408, Outcome.RETRY), (425, Outcome.RETRY),
    (429, Outcome.RATE_LIMITED), (500, Outcome.RETRY), (503, Outcome.RETRY), (301, Outcome.PERMANENT),
    (400, Outcome.PERMANENT), (401, Outcome.PERMANENT), (404, Outcome.PERMANENT), (413, Outcome.PERMANENT),
])
def test_what_an_answer_means(status: int, outcome: Outcome) -> None:
    result = classify(status, 3.0)
    assert result.outcome is outcome and result.status == status
    assert result.reason == ("" if outcome is Outcome.SENT else f"http-{status}")
