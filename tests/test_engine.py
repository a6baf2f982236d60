"""The one evaluation engine: `compare` and `benchmark` give the same numbers on the same plan, and
`benchmark --workers 2` (a real two-worker Dask cluster) equals the single-process run bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segcp.benchmark import parse_config, run_benchmark
from segcp.cli import main
from segcp.compare import compare_dir
from segcp.specs import parse_spec
from segcp.synthetic import make_phantoms

METHODS = ["threshold@CRC", "morph:se=cross@Consema", "morph:se=cross|square,folds=3@Consema tuned"]


def _same(a, b) -> bool:
    """Equal, with NaN (or JSON's null for it) equal to itself."""
    nan = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (nan(a) and nan(b)) or a == b


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine") / "d"
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True)
    ph = make_phantoms(40, shape=(48, 48), seed=3)
    for p in ph:
        np.save(root / "probs" / f"{p.id}.npy", p.probs)
        np.save(root / "masks" / f"{p.id}.npy", p.label == 3)
    (root / "groups.json").write_text(json.dumps({p.id: p.group for p in ph}))
    return root


def test_compare_and_benchmark_give_the_same_numbers(data, tmp_path):
    cmp = compare_dir(
        data, [parse_spec(m) for m in METHODS], alphas=(0.2, 0.1), n_cal=20, n_splits=3, seed=1, out=tmp_path / "c", show_progress=False
    )
    text = (
        f"seed = 1\nsplits = 3\nn_cal = 20\nalphas = [0.2, 0.1]\nvalidity_splits = 0\nmethods = {json.dumps(METHODS)}\n"
        f"[[task]]\nname = 'd'\ndata = '{data}'\n"
    )
    bench = run_benchmark(parse_config(text), None, use_cache=False, show_progress=False)
    records = {(r["method"], r["alpha"], r["split"]): r for r in bench["tasks"][0]["records"]}
    assert len(cmp["splits"]) == len(records) == 3 * 2 * 3
    compared = 0
    for r in cmp["splits"]:
        b = records[(r["method"], r["alpha"], r["split"])]
        assert set(r) == set(b)
        for k, v in r.items():
            assert _same(v, b[k]), (r["method"], r["alpha"], r["split"], k, v, b[k])
            compared += isinstance(v, float)
    assert compared > 3 * 2 * 3 * 10  # λ̂, every metric and count of every split
    assert any("chosen" in r for r in cmp["splits"])  # the tuned row chose per split, the same way in both
    summary = {(s["method"], s["alpha"]): s for s in bench["summary"]}
    for s in cmp["summary"]:  # the same means, checks and win rates (against the same baseline, the first row)
        b = summary[(s["method"], s["alpha"])]
        assert all(_same(v, b[k]) for k, v in s.items()), s["method"]
    assert "dice_win" in summary[("Consema", 0.2)] and "dice_win" not in summary[("CRC", 0.2)]
    model = {(r["split"]): r for r in bench["tasks"][0]["model"]}
    assert {k: v for k, v in cmp["model"].items()}.keys() >= {"dice", "missed"}
    assert _same(cmp["model"]["dice"], float(np.nanmean([model[s]["dice"] for s in range(3)])))
    written = json.loads((tmp_path / "c" / "results.json").read_text())
    assert [r["lambda"] for r in written["splits"]] == [r["lambda"] for r in cmp["splits"]]


SMALL = """
seed = 2
splits = 2
n_cal = 20
alphas = [0.2, 0.1]
curve_alphas = [0.15]
validity_splits = 20
methods = ["threshold@CRC", "morph:se=square@Consema", "rwcp:encoder=fallback,k=6,steps=3,cache=false@RW-CP",
           "threshold:normalize=none|max,folds=3@CRC tuned", "aps:beta=0.8@APS", "threshold:loss=fdr,delta=0.2,pvalue=wsr@FDR"]

[[task]]
name = "synthetic"
n = 40
size = 48

[ablation]
alpha = 0.2
n_cal = [10]
[ablation.params]
steps = [0]

[sets]
alpha = 0.2
splits = 2
n_cal = 10
max_images = 20
draws = 10
sizes = [5, 10]
draw_images = 2
validity_splits = 10
"""


def _results(out: Path) -> dict:
    """results.json without what depends on the run (timings, CPU seconds, cache counters, commit, executor)."""
    rec = json.loads((out / "results.json").read_text())
    for t in rec["tasks"]:
        t.pop("seconds_per_image")
        for r in t["sets_records"]:
            r.pop("draw_cpu_seconds_per_image")
    rec["results"] = [r for r in rec["results"] if r["metric"] != "draw_cpu_seconds_per_image"]
    return {k: rec[k] for k in ("tasks", "summary", "results", "rows", "multiclass_rows") if k in rec}


def test_benchmark_on_two_workers_equals_one_process(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    runs = {
        "one": ["--no-cache"],
        "workers": ["--workers", "2", "--cache", str(tmp_path / "cache")],  # the workers also write the slow score maps to the cache
        "jobs": ["--jobs", "2", "--no-cache"],  # the old spelling: two local processes, with a warning
    }
    for name, extra in runs.items():
        with pytest.raises(SystemExit) as exc:
            main(["benchmark", "--config", str(cfg), "--out", str(tmp_path / name), "-q", *extra])
        assert exc.value.code in (0, None)
    err = capsys.readouterr().err
    assert "--jobs is deprecated; use --workers N" in err and err.count("\n") <= 2
    one = _results(tmp_path / "one")
    assert json.dumps(_results(tmp_path / "workers"), sort_keys=True) == json.dumps(one, sort_keys=True)
    assert json.dumps(_results(tmp_path / "jobs"), sort_keys=True) == json.dumps(one, sort_keys=True)
    task = one["tasks"][0]
    assert {r["method"] for r in task["records"]} >= {"CRC", "Consema", "RW-CP", "RW-CP (steps=0)", "CRC tuned"}
    assert task["sets_records"] and task["validity"] and task["model"]
    # a controlled loss: its step functions come from the workers
    fdr = [r["risk"] for r in task["records"] if r["method"] == "FDR" and r["alpha"] == 0.2 and r["n_cal"] == 20]
    assert len(fdr) == 2 and all(math.isfinite(r) for r in fdr)
    assert list((tmp_path / "cache" / "maps").iterdir())  # RW-CP's maps, written by the workers
    rec = json.loads((tmp_path / "workers" / "results.json").read_text())
    assert rec["workers"] == 2 and "Dask" in rec["executor"]


def test_tune_on_two_workers_equals_one_process(data, tmp_path, monkeypatch):
    """`segcp tune --workers 2`: the held-out folds measured on the cluster give the same CV table."""
    pytest.importorskip("distributed")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    tables = []
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / f"tune{len(extra)}.json"
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "tune",
                    "--data",
                    str(data),
                    "-m",
                    "morph",
                    "-g",
                    "se=cross|square",
                    "--alpha",
                    "0.2",
                    "--folds",
                    "3",
                    "--out",
                    str(out),
                    "-q",
                    *extra,
                ]
            )
        assert exc.value.code in (0, None)
        tables.append(json.loads(out.read_text()))
    assert tables[0]["table"] == tables[1]["table"] and tables[0]["best"] == tables[1]["best"]
    assert all(math.isfinite(r["value"]) for r in tables[0]["table"])
