"""`--url` or TOCSIN_URL: one reading of the node URLs for every command that talks to nodes."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tocsin.cli.issue_cmd import issue
from tocsin.cli.node_urls import node_urls, url_option
from tocsin.cli.status_cmd import status
from tocsin.cli.watch_cmd import watch


def test_options_win_over_the_environment_and_may_list_several() -> None:
    env = {"TOCSIN_URL": "http://a/, http://b"}
    assert node_urls((), env) == ["http://a", "http://b"]
    assert node_urls(("http://c/",), env) == ["http://c"]
    assert node_urls(("http://c,http://d", " http://e "), env) == ["http://c", "http://d", "http://e"]


@pytest.mark.parametrize("env", [{}, {"TOCSIN_URL": ""}, {"TOCSIN_URL": " , "}])
def test_no_node_is_a_usage_error(env: dict[str, str]) -> None:
    with pytest.raises(click.UsageError, match="give --url or set TOCSIN_URL"):
        node_urls((), env)


def test_a_command_gets_the_parsed_list(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command()
    @url_option
    def show(urls: list[str]) -> None:
        click.echo(" ".join(urls))

    monkeypatch.setenv("TOCSIN_URL", "http://a/,http://b")
    assert CliRunner().invoke(show, []).output == "http://a http://b\n"
    assert CliRunner().invoke(show, ["--url", "http://c/"]).output == "http://c\n"


@pytest.mark.parametrize(
    ("command", "args"), [(issue, ["--token", "t", "alert.xml"]), (status, ["--once"]), (watch, ["--lat", "48.8", "--lon", "2.3"])]
)
def test_every_node_command_reads_the_same_option(
    command: click.Command, args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "alert.xml").write_text("<alert/>")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOCSIN_URL", raising=False)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2 and "give --url or set TOCSIN_URL" in result.output
