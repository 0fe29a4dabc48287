"""Text budgets: GSM 7-bit counting (TS 23.038), UCS-2 fallback, WEA and push."""

from __future__ import annotations

from tocsin.cap.model import Info
from tocsin.cap.parse import parse_xml
from tocsin.channels.budgets import (
    CELL_BROADCAST_GSM7,
    CELL_BROADCAST_UCS2,
    GSM7_BASIC,
    GSM7_EXTENSION,
    cell_broadcast,
    push,
    screen_text,
    wea,
    wea_text,
)

from tests.api.preview_drafts import Text, draft


def info(**texts: object) -> Info:
    return parse_xml(draft(Text(**texts))).infos[0]  # type: ignore[arg-type]


def test_the_default_alphabet_has_127_characters_and_ten_in_the_extension_table() -> None:
    assert len(GSM7_BASIC) == 127 and len(GSM7_EXTENSION) == 10  # 128 codes less the escape
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert {"é", "è", "à", "ù", "ì", "ò", "É", "Ç", "ß", "Ø"} <= GSM7_BASIC
    assert not {"ê", "â", "ô", "û", "ç", "œ", "`"} & GSM7_BASIC


def test_gsm7_counts_extension_characters_twice() -> None:
    used = cell_broadcast("Évacuez: 5 € {x}")
    assert (used.encoding, used.length, used.budget, used.forced_by) == ("gsm7", 16 + 3, CELL_BROADCAST_GSM7, None)


def test_one_character_outside_gsm7_makes_the_whole_text_ucs2() -> None:
    used = cell_broadcast("Crue € forte, fenêtres")
    assert (used.encoding, used.budget, used.forced_by) == ("ucs2", CELL_BROADCAST_UCS2, ("ê", 17))
    assert used.length == 22  # UCS-2 counts each character once, € too
    assert cell_broadcast("Tsunami 🌊").length == 10  # beyond the BMP: a surrogate pair


def test_budgets_are_over_only_past_the_limit() -> None:
    assert not cell_broadcast("a" * 1395).is_over and cell_broadcast("a" * 1396).is_over
    assert cell_broadcast("€" * 698).is_over and not cell_broadcast("€" * 697).is_over
    assert not cell_broadcast("ê" * 615).is_over and cell_broadcast("ê" * 616).is_over
    assert not wea("x" * 360).is_over and wea("x" * 361).is_over
    assert not push(4096).is_over and push(4097).is_over


def test_the_screen_text_is_headline_description_instruction_and_wea_may_have_its_own() -> None:
    given = info(headline="H", description="D", instruction="I")
    assert screen_text(given) == "H\nD\nI" == wea_text(given)
    assert screen_text(info(headline="H", instruction="I")) == "H\nI"
    own = info(headline="H", description="D" * 500, parameters=(("CMAMlongtext", "Court."),))
    assert wea_text(own) == "Court." and screen_text(own).startswith("H\nD")
