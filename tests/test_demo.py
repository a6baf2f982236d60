"""`segcp demo` (the README's main command) runs end to end on the embedded phantoms."""

from __future__ import annotations

import json


def test_demo_runs_and_keeps_the_guarantee(demo_report):
    out, text, code = demo_report
    assert code in (None, 0)
    assert "SYNTHETIC" in text
    files = {p.name for p in out.iterdir()}
    assert any(f.endswith(".json") for f in files) and any(f.endswith((".md", ".html")) for f in files)
    assert {"report.html", "report.md", "results.json", "results.csv", "config.toml"} <= files  # the benchmark's report folder
    assert "error" not in text.lower()
    assert "CONSIGN (K=5)" in text and "pixel-wise APS" in text  # the multi-class rows ran
    rec = json.loads((out / "results.json").read_text())
    rows = [r for r in rec["rows"] if r["alpha"] is not None]
    assert len(rows) == 9  # three pixel-set methods at three alphas
    for r in rows:  # the guarantee over 200 random splits: mean test FNR <= alpha + 3 SE
        v = r["validity"]
        assert v["splits"] == 200 and v["mean_test_fnr"] <= r["alpha"] + 3 * v["se"], r["method"]
    assert {r["method"] for r in rec["multiclass_rows"]} == {"CONSIGN (K=5)", "pixel-wise APS"}
    # every method of segcp is in the report
    methods = {r["spec"].get("method") or r["spec"]["candidates"][0]["method"] for r in rec["tasks"][0]["rows"]}
    assert methods == {"threshold", "morph", "rwcp", "consign", "aps"}
