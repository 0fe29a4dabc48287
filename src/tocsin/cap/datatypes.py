"""The lexical forms of CAP values: XSD types as the CAP 1.2 schema (and libxml2) read them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from tocsin.errors import (
    CAP_DATETIME,
    CAP_DATETIME_INVALID,
    CAP_DECIMAL,
    CAP_INTEGER,
    CAP_LANGUAGE,
    CAP_LIST_MALFORMED,
    CAP_URI,
    Problem,
)


class BadValue(ValueError):
    """A value that breaks its lexical rule; carries the catalog problem and a detail."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def collapse(text: str) -> str:
    """XSD whiteSpace="collapse": runs of XML whitespace become one space, ends trimmed."""
    return " ".join(re.split(r"[ \t\r\n]+", text)).strip(" ")


# CAP 1.2 XSD pattern \d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d on xs:dateTime; the
# comma the pattern admits is no valid xs:dateTime, so only + and - remain.
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)([-+])(\d\d):(\d\d)", re.ASCII)


def _datetime_hint(text: str) -> str:
    if text.endswith("Z"):
        return "; CAP 1.2 forbids 'Z', write +00:00"
    if re.search(r"T\d\d:\d\d:\d\d\.\d", text):
        return "; CAP 1.2 forbids fractional seconds"
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text, re.ASCII):
        return "; the UTC offset is missing"
    return ""


def read_datetime(raw: str) -> datetime:
    """A timezone-aware datetime from a CAP date-time; 24:00:00 is the next midnight.

    Raises:
        BadValue: wrong form (cap.datetime) or a day or time that does not exist.
    """
    text = collapse(raw)
    found = _DATETIME.fullmatch(text)
    if found is None:
        raise BadValue(CAP_DATETIME, f"{text!r} is not a CAP date-time{_datetime_hint(text)}")
    year, month, day, hour, minute, second, sign, tz_h, tz_m = found.groups()
    offset_min = int(tz_h) * 60 + int(tz_m)
    # xs:dateTime: year 0000 does not exist, 24:00:00 is allowed, offsets stay within 14:00.
    if int(year) == 0 or int(tz_m) > 59 or offset_min > 14 * 60:
        raise BadValue(CAP_DATETIME_INVALID, f"{text!r} is not a real date-time")
    is_end_of_day = (hour, minute, second) == ("24", "00", "00")
    tz = timezone(timedelta(minutes=-offset_min if sign == "-" else offset_min))
    try:
        moment = datetime(
            int(year), int(month), int(day), 0 if is_end_of_day else int(hour), int(minute), int(second), tzinfo=tz
        )
        return moment + timedelta(days=1) if is_end_of_day else moment
    except (ValueError, OverflowError):
        raise BadValue(CAP_DATETIME_INVALID, f"{text!r} is not a real date-time") from None


def format_datetime(moment: datetime) -> str:
    """The CAP form with the value's own offset (`2024-05-01T10:00:00+02:00`), never `Z`.

    A naive datetime or one with fractions renders in a form the schema check refuses.
    """
    base = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
    if moment.microsecond:
        base += f".{moment.microsecond:06d}"
    offset = moment.utcoffset()
    if offset is None:
        return base
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{base}{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_LANGUAGE = re.compile(r"[a-zA-Z]{1,8}(?:-[a-zA-Z0-9]{1,8})*", re.ASCII)


def read_integer(raw: str) -> int:
    """An xs:integer. Raises: BadValue."""
    text = collapse(raw)
    if not _INTEGER.fullmatch(text):
        raise BadValue(CAP_INTEGER, f"{text!r} is not a whole number")
    return int(text)


def read_decimal(raw: str) -> float:
    """An xs:decimal, as a float. Raises: BadValue."""
    text = collapse(raw)
    if not _DECIMAL.fullmatch(text):
        raise BadValue(CAP_DECIMAL, f"{text!r} is not a decimal number")
    return exact_float(text)


class ExactFloat(float):
    """A float read from a decimal it cannot hold exactly (more digits than a double's
    ~15-17): it keeps the decimal, so that the CAP rendered from it (the CAP devices
    receive and verify) has the issuer's number, not its nearest double."""

    __slots__ = ("text",)
    text: str


def exact_float(text: str) -> float:
    """`text` (an xs:decimal) as a float that renders back as the same number
    (format_decimal): a plain float when it does, which is nearly always (every decimal of
    up to 15 significant digits, every double's shortest form), else an ExactFloat."""
    number = float(text)
    # At most 15 characters hold at most 15 significant digits, which a double always gives
    # back (DBL_DIG): the common case, decided without formatting anything.
    if len(text) <= 15 or repr(number) == text or Decimal(format_decimal(number)) == Decimal(text):
        return number
    exact = ExactFloat(number)
    exact.text = text
    return exact


def format_decimal(number: float) -> str:
    """A float as an xs:decimal, never in exponent form (`1e-05` -> `0.00001`); an
    ExactFloat as the decimal it was read from."""
    if isinstance(number, ExactFloat):
        return number.text
    text = repr(float(number))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def read_language(raw: str) -> str:
    """An xs:language; an empty element takes the schema default en-US. Raises: BadValue."""
    if raw == "":
        return "en-US"
    text = collapse(raw)
    if not _LANGUAGE.fullmatch(text):
        raise BadValue(CAP_LANGUAGE, f"{text!r} is not a language code such as en-US")
    return text


# RFC 3986 URI-reference, as libxml2's xmlParse3986URIReference accepts it for xs:anyURI.
_U = r"[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2}|[!$&'()*+,;=]"
_PCHAR = rf"(?:{_U}|[:@])"
_SEGMENT_NZ_NC = rf"(?:{_U}|@)+"
_AUTHORITY = rf"(?:(?:{_U}|:)*@)?(?:\[[^\]]*\]|(?:{_U})*)(?::(?P<port>\d+))?"
_TAIL = rf"(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?\[\]])*)?"
_PATHS = rf"//{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?"
_ABSOLUTE = re.compile(rf"[A-Za-z][A-Za-z0-9+\-.]*:(?:{_PATHS}|{_PCHAR}+(?:/{_PCHAR}*)*)?{_TAIL}", re.ASCII)
_RELATIVE = re.compile(rf"(?:{_PATHS}|{_SEGMENT_NZ_NC}(?:/{_PCHAR}*)*)?{_TAIL}", re.ASCII)
# libxml2 turns these characters into "_" before parsing, so they never make a URI invalid.
_SOFTENED = re.compile(r"""[^\x21-\x7e]|[<>"{}|\\^`']""")


def read_uri(raw: str) -> str:
    """An xs:anyURI, returned as written. Raises: BadValue."""
    text = _SOFTENED.sub("_", collapse(raw))
    for form in (_ABSOLUTE, _RELATIVE):
        found = form.fullmatch(text)
        if found is not None and int(found.group("port") or 0) <= 2**31 - 1:
            return raw
    raise BadValue(CAP_URI, f"{collapse(raw)!r} is not a valid URI")


_LIST_ITEM = re.compile(r'[ \t\r\n]*(?:"([^"]*)"|([^" \t\r\n]+))(?=[ \t\r\n]|$)')


def read_list(raw: str) -> tuple[str, ...]:
    """A CAP space-separated list; multi-word items in double quotes (§3.2.1 addresses).

    Raises:
        BadValue: an unbalanced quote, or a quote inside an item.
    """
    items: list[str] = []
    position = 0
    while raw[position:].strip(" \t\r\n"):
        found = _LIST_ITEM.match(raw, position)
        if found is None:
            raise BadValue(CAP_LIST_MALFORMED, f"cannot read the list after {raw[:position]!r}")
        quoted, bare = found.groups()
        items.append(quoted if quoted is not None else bare)
        position = found.end()
    return tuple(items)


def format_list(items: tuple[str, ...]) -> str:
    """The CAP list form of `items`, quoting those with spaces."""
    return " ".join(f'"{item}"' if not item or re.search(r"[ \t\r\n]", item) else item for item in items)
