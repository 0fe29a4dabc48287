"""Log lines: JSON with their extras, and no extra key that logging would refuse."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from tocsin.logs import JsonFormatter

SRC = Path(__file__).resolve().parents[1] / "src" / "tocsin"
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def test_no_extra_key_clashes_with_a_log_record_attribute() -> None:
    """logging raises KeyError for such a key: a log call would crash its task."""
    clashes = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "extra" and isinstance(node.value, ast.Dict):
                for key in node.value.keys:
                    if isinstance(key, ast.Constant) and key.value in RESERVED:
                        clashes.append(f"{path.relative_to(SRC)}:{key.lineno} {key.value}")
    assert not clashes


def test_json_line_carries_message_and_extras() -> None:
    record = logging.makeLogRecord({"name": "tocsin.x", "levelname": "INFO", "msg": "alert accepted"})
    record.alert_id = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "alert accepted" and line["alert_id"] == "abc" and line["level"] == "info"
