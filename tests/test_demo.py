"""`segcp demo` (the README's main command) runs end to end on the embedded phantoms."""

from __future__ import annotations

import json

import pytest

from segcp.cli import main


def test_demo_runs_and_keeps_the_guarantee(tmp_path, capsys):
    out = tmp_path / "demo-out"
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(out)])
    assert exc.value.code in (None, 0)
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text
    files = {p.name for p in out.iterdir()}
    assert any(f.endswith(".json") for f in files) and any(f.endswith(".md") or f.endswith(".html") for f in files)
    assert "error" not in text.lower()
    assert "CONSIGN (K=5)" in text and "pixel-wise APS" in text  # the multi-class rows ran
    rec = json.loads((out / "results.json").read_text())
    rows = [r for r in rec["rows"] if r["alpha"] is not None]
    assert len(rows) == 9  # three pixel-set methods at three alphas
    for r in rows:  # the guarantee over 200 random splits: mean test FNR <= alpha + 3 SE
        v = r["validity"]
        assert v["splits"] == 200 and v["mean_test_fnr"] <= r["alpha"] + 3 * v["se"], r["method"]
    assert {r["method"] for r in rec["multiclass_rows"]} == {"CONSIGN (K=5)", "pixel-wise APS"}
