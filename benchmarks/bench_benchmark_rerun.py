"""How much a rerun of `segcp benchmark` costs: first run, then one more α, one more method, more splits.

Each run is a fresh ``segcp benchmark`` process on the same cache (``--cache``, empty at the
start), writing the whole report; wall time and CPU time (user + system of the process and its
workers) are measured, with the cache's counters from results.json. The variants edit the
config's text: ``--alpha`` is added to ``alphas``, ``--method`` to ``methods``, ``--more-splits``
to ``splits``. Encoder features live in the encoder layer's own cache (``$SEGCP_CACHE/features``);
``--cold`` points ``SEGCP_CACHE`` at a fresh folder too, so the first run also computes them.

Usage (docs/benchmark.md has the numbers)::

    python benchmarks/bench_benchmark_rerun.py --config benchmarks/acdc-lv.toml --work /tmp/rerun \\
        --alpha 0.25 --method "morph:se=square@Consema (square)" --more-splits 5 --out docs/benchmarks/benchmark_rerun_acdc-lv.json
    python benchmarks/bench_benchmark_rerun.py --demo --work /tmp/rerun-demo --cold --alpha 0.25 \\
        --method "morph:se=square@Consema (square)" --more-splits 2 --out docs/benchmarks/benchmark_rerun_demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _with_alpha(text: str, alpha: float) -> str:
    m = re.search(r"^alphas\s*=\s*\[([^\]]*)\]", text, flags=re.MULTILINE)
    assert m, "the config has no top-level alphas = [...] line"
    return text[: m.start()] + f"alphas = [{m.group(1).strip()}, {alpha!r}]" + text[m.end() :]


def _with_method(text: str, spec: str) -> str:
    m = re.search(r"^methods\s*=\s*\[", text, flags=re.MULTILINE)
    assert m, "the config has no top-level methods = [ line"
    return text[: m.end()] + f"\n  {json.dumps(spec)}," + text[m.end() :]


def _with_splits(text: str, more: int) -> str:
    m = re.search(r"^splits\s*=\s*(\d+)", text, flags=re.MULTILINE)
    assert m, "the config has no top-level splits = N line"
    return text[: m.start()] + f"splits = {int(m.group(1)) + more}" + text[m.end() :]


def _absolute_data(text: str, config: Path) -> str:
    """Resolve every task's data path now, so the edited copies can live anywhere."""
    from segcp.benchmark import load_config

    cfg = load_config(config)
    out = text
    for t in cfg.tasks:
        if t.data is not None:
            out = re.sub(r'^data\s*=\s*"[^"]*' + re.escape(t.data.name) + r'"', f'data = "{t.data}"', out, count=1, flags=re.MULTILINE)
    return out


def _run(name: str, text: str, work: Path, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    cfg = work / f"{name}.toml"
    cfg.write_text(text)
    out = work / "out"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "segcp.cli", "benchmark", "--config", str(cfg), "--out", str(out), "--cache", str(cache), "-q"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: segcp benchmark failed:\n{proc.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text())
    row = {
        "run": name,
        "wall_seconds": wall,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "cache": res["cache"],
        "report_seconds": res["timings"].get("report and figures"),
    }
    print(
        f"{name}: {wall:.1f} s wall, {row['cpu_seconds']:.1f} s CPU; records computed {res['cache']['misses'].get('records')}, "
        f"reused {res['cache']['hits'].get('records')}; curves computed {res['cache']['misses'].get('curves')}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path)
    src.add_argument("--demo", action="store_true", help="the demo's config (segcp.demo.demo_config())")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (emptied)")
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--method", default="morph:se=square@Consema (square)")
    ap.add_argument("--more-splits", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also a fresh SEGCP_CACHE (encoder features computed in the first run)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    if a.demo:
        from segcp.demo import demo_config

        text, source = demo_config(), "segcp.demo.demo_config()"
    else:
        text, source = _absolute_data(a.config.read_text(), a.config), str(a.config)
    env = dict(os.environ)
    if a.cold:
        env["SEGCP_CACHE"] = str(a.work / "segcp-cache")
    cache = a.work / "benchmark-cache"
    runs = [
        _run("first", text, a.work, cache, env),
        _run("again (nothing new)", text, a.work, cache, env),
        _run(f"one more alpha ({a.alpha:g})", _with_alpha(text, a.alpha), a.work, cache, env),
        _run(f"one more method ({a.method})", _with_method(_with_alpha(text, a.alpha), a.method), a.work, cache, env),
        _run(f"{a.more_splits} more splits", _with_splits(_with_method(_with_alpha(text, a.alpha), a.method), a.more_splits), a.work, cache, env),
    ]
    first = runs[0]
    for r in runs[1:]:
        r["speedup_wall"] = first["wall_seconds"] / r["wall_seconds"]
        r["speedup_cpu"] = first["cpu_seconds"] / r["cpu_seconds"]
    rec = {"config": source, "cold_features": a.cold, "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(), "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
