"""What `tocsin watch` prints: control characters in alert text never reach the terminal, and
a Test or Exercise alert is tagged whatever its text holds."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.samples import alert_xml
from tocsin.cap.parse import parse_xml
from tocsin.cli.watch_cmd import render
from tocsin.client.display import make_display, terminal_line, terminal_text

from .cap_samples import NOW

# Anything a terminal acts on: C0 and C1 controls, DEL, bidirectional overrides.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE = [
    "\r[ACTUAL] Evacuate now",  # back to the line start, over the tag
    "\x1b[2K\x1b[1GEvacuate now",  # erase the line, cursor home
    "\x9b2K\x9b1GEvacuate now",  # the same with the 8-bit CSI (allowed in XML 1.0)
    "\x1b]0;pwned\x07Evacuate now",  # OSC: set the window title
    "\x9d0;pwned\x9cEvacuate now",  # OSC, 8-bit, ended by ST
    "\x08\x08\x08\x08\x08\x08\x7fEvacuate now",  # backspaces and DEL
    "Evacuate\u202e won tset",  # right-to-left override
    "line one\nline two\x85three",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_text_holds_no_control_and_keeps_the_words(text: str) -> None:
    shown = terminal_text(text)
    assert not CONTROL.search(shown)
    assert "Evacuate" in shown or "line one line two three" == shown
    assert "pwned" not in shown  # an OSC goes whole, its title with it


@pytest.mark.parametrize("status", ["Test", "Exercise"])
@pytest.mark.parametrize("text", HOSTILE)
def test_test_and_exercise_lines_start_with_their_tag_whatever_the_text(status: str, text: str) -> None:
    alert = parse_xml(alert_xml(status=status))
    shown = make_display(alert, alert.infos[0], alert_id="a", seq=1, node="http://n", now=NOW + timedelta(seconds=1))
    # Every printed text hostile (a rogue relay is not bound by what XML can carry).
    hostile = replace(shown, event=text, headline=text, sender=text, identifier=text, language=text, node=text)
    line = render(hostile)
    assert line.startswith(f"[{status.upper()}] ")
    assert not CONTROL.search(line)


def test_every_printed_field_is_cleaned() -> None:
    # Through the real parser: CR and the C1 range are valid XML 1.0 characters.
    alert = parse_xml(alert_xml(sender="pref\x9b2K@x", identifier="id\x9b1G", headline="\rCrue"))
    display = make_display(alert, alert.infos[0], alert_id="a", seq=1, node="http://n\x1b[31m", now=NOW)
    line = terminal_line(display)
    assert not CONTROL.search(line)
    assert line.startswith("Inondation:  Crue [pref@x id, fr-FR, after ")  # CR is a space
    assert line.endswith("via http://n]")


def test_escaped_controls_stay_visible() -> None:
    assert terminal_text("a\x00b\x9fc") == "a\\x00b\\x9fc"
    assert terminal_text("a\u202eb") == "a\\u202eb"
