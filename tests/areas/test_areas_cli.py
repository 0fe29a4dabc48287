"""`tocsin areas import|list|show|remove` against a real node."""

from __future__ import annotations

import json
from pathlib import Path

from tests.areas.conftest import MARSEILLE, collection, feature
from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN
from tests.e2e.test_issue_cli import invoke
from tocsin.app import Node


async def test_an_admin_imports_lists_shows_and_removes_from_the_shell(node: Node, tmp_path: Path) -> None:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ADMIN_TOKEN}
    path = tmp_path / "zones.geojson"
    path.write_bytes(collection(feature("nice", nom="Nice"), feature("13", MARSEILLE, nom="Marseille")))
    made = await invoke("areas", "import", str(path), "--scheme", "ZONES-C", "--code-property", "code",
                        "--name-property", "nom", env=env)
    assert made.exit_code == 0, made.output
    assert made.output.startswith("ZONES-C: 2 areas imported (10 points), 0 removed")
    listed = await invoke("areas", "list", env={"TOCSIN_URL": node.url})  # public: no token
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "ZONES-C  2 areas  imported" in lines and "INSEE-DEP  96 areas  built-in" in lines
    one = await invoke("areas", "list", "--scheme", "ZONES-C", env=env)
    assert one.output.splitlines() == ["ZONES-C  2 areas  imported", "13  Marseille  1 polygon  5 points",
                                       "nice  Nice  1 polygon  5 points"]
    every = await invoke("areas", "list", "--scheme", "INSEE-DEP", "--json", env=env)
    assert len(json.loads(every.output)["areas"]) == 96
    shown = await invoke("areas", "show", "ZONES-C", "13", env=env)
    assert shown.exit_code == 0 and json.loads(shown.output)["polygons"] == [[[lat, lon] for lon, lat in MARSEILLE]]
    missing = await invoke("areas", "show", "ZONES-C", "14", env=env)
    assert missing.exit_code == 2 and missing.output.startswith("area.not-found")
    not_admin = await invoke("areas", "remove", "ZONES-C", env={**env, "TOCSIN_TOKEN": ISSUER_TOKEN})
    assert not_admin.exit_code == 2 and not_admin.output.startswith("auth.role-required")
    removed = await invoke("areas", "remove", "ZONES-C", env=env)
    assert removed.exit_code == 0 and removed.output.strip() == "ZONES-C: 2 areas removed"
    gone = await invoke("areas", "list", "--scheme", "ZONES-C", env=env)
    assert gone.exit_code == 2 and gone.output.startswith("area.not-found")


async def test_a_bad_file_is_refused_before_anything_is_sent(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "bad.geojson"
    path.write_bytes(collection(feature("a"), feature("a")))
    env = {"TOCSIN_URL": "http://127.0.0.1:9", "TOCSIN_TOKEN": ADMIN_TOKEN}  # no node there: nothing sent
    refused = await invoke("areas", "import", str(path), "--scheme", "Z", "--code-property", "code", env=env)
    assert refused.exit_code == 2
    assert refused.output.startswith(f"area.import-invalid: {path}: features[1] (Z a): code a appears twice")
    path.write_bytes(b"not json")
    assert (await invoke("areas", "import", str(path), "--scheme", "Z", "--code-property", "code",
                         env=env)).exit_code == 2
