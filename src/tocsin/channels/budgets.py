"""How much text each broadcast channel carries, and how much of its budget an alert's text takes.

Cell broadcast (3GPP TS 23.041): at most 15 pages of 93 characters in the GSM 7-bit default
alphabet (TS 23.038 §6.2.1; a character of its extension table takes two, an escape and
itself), 1,395 in all, or 15 pages of 41 UCS-2 characters, 615, as soon as one character is
outside that alphabet. WEA (FCC 47 CFR 10.430): 360 characters. A push payload (Web Push,
FCM, APNs): 4 KB, the signed alert as the node sends it.

Which text each budget counts (docs/api.md, "Reach preview"): a cell broadcast or WEA
message is the text a person reads on the screen, so the info's headline, description and
instruction, in that order, one line each (what an EU-Alert or WEA message is built from when
the issuer wrote no text of its own for the channel); for WEA, the IPAWS profile's
`CMAMlongtext` parameter instead when the info gives one, since that is what IPAWS sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from tocsin.cap.model import Info

CELL_BROADCAST_GSM7 = 1395
CELL_BROADCAST_UCS2 = 615
WEA_CHARS = 360
PUSH_BYTES = 4096
# The IPAWS CAP profile's parameter for the 360-character WEA text.
WEA_PARAMETER = "CMAMlongtext"

# 3GPP TS 23.038 §6.2.1: the GSM 7-bit default alphabet, in code order 0x00-0x7F (0x1B is the
# escape to the extension table, not a character), and the extension table's characters.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
) - {"\x1b"}
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


@dataclass(frozen=True, slots=True, kw_only=True)
class Use:
    """One text against one channel's budget: its length in the channel's unit, the budget."""

    length: int
    budget: int
    unit: str
    # Cell broadcast: "gsm7" or "ucs2", and the first character that forces UCS-2 (with its
    # index in the text).
    encoding: str | None = None
    forced_by: tuple[str, int] | None = None

    @property
    def is_over(self) -> bool:
        return self.length > self.budget

    def as_json(self) -> dict[str, object]:
        used: dict[str, object] = {"length": self.length, "budget": self.budget, "unit": self.unit,
                                   "over": self.is_over}
        if self.encoding is not None:
            used["encoding"] = self.encoding
            used["ucs2Because"] = (None if self.forced_by is None
                                   else {"character": self.forced_by[0], "index": self.forced_by[1],
                                         "codePoint": f"U+{ord(self.forced_by[0]):04X}"})
        return used


def screen_text(info: Info) -> str:
    """What a person reads: headline, description, instruction, one line each (absent ones left out)."""
    return "\n".join(part for part in (info.headline, info.description, info.instruction) if part)


def wea_text(info: Info) -> str:
    """The WEA text: the info's CMAMlongtext parameter when given, else its screen text."""
    given = next((p.value for p in info.parameters if p.value_name == WEA_PARAMETER), None)
    return given if given is not None else screen_text(info)


def cell_broadcast(text: str) -> Use:
    """The text in GSM 7-bit septets (extension characters count two) against 1,395, or
    in UCS-2 code units (a character beyond the BMP counts two) against 615."""
    septets = 0
    for index, char in enumerate(text):
        if char in GSM7_BASIC:
            septets += 1
        elif char in GSM7_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return Use(length=units, budget=CELL_BROADCAST_UCS2, unit="UCS-2 characters", encoding="ucs2",
                       forced_by=(char, index))
    return Use(length=septets, budget=CELL_BROADCAST_GSM7, unit="GSM-7 characters", encoding="gsm7")


def wea(text: str) -> Use:
    """The text in characters (Unicode code points) against WEA's 360."""
    return Use(length=len(text), budget=WEA_CHARS, unit="characters")


def push(size_bytes: int) -> Use:
    """A push payload's size against 4 KB."""
    return Use(length=size_bytes, budget=PUSH_BYTES, unit="bytes")
