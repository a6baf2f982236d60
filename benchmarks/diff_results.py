"""Compare two results.json (old code vs new code): every number, bit for bit.

usage: python benchmarks/diff_results.py OLD.json NEW.json   (two results.json of segcp compare, or of segcp benchmark / demo)

Walks both results; records are matched by their identity (task, method, n_cal, alpha, split),
summaries by (task, method, n_cal, alpha), tidy rows by (task, method, n_cal, alpha, split,
metric). Prints every number that differs (exactly: == or both NaN/None), the keys only one side
has, and a count of the numbers compared. Run metadata (timings, commit, cache counters, CPU
seconds) is skipped: it is not a result.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

SKIP = {
    "commit",
    "started",
    "machine",
    "command",
    "cache",
    "features",
    "timings",
    "cpu",
    "seconds",
    "jobs",
    "executor",
    "workers",
    "config",
    "config_path",
    "schema_version",
    "segcp_version",
    "seconds_per_image",
    "draw_cpu_seconds_per_image",
    "data",
}


def num_equal(a, b):
    """Equal values, NaN (or JSON's null for it) equal to itself."""
    nan = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (nan(a) and nan(b)) or a == b


stats = Counter()
diffs: list[str] = []
only: Counter = Counter()


def compare(path, a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if k in SKIP:
                continue
            if k not in a or k not in b:
                only[(path.split("[")[0] + "." + k, "old" if k in a else "new")] += 1
                continue
            compare(f"{path}.{k}", a[k], b[k])
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            compare(f"{path}[{i}]", x, y)
        return
    stats["values"] += 1
    if not num_equal(a, b):
        diffs.append(f"{path}: {a!r} vs {b!r}")


def by(rows, keys):
    return {tuple(r.get(k) for k in keys): r for r in rows}


def compare_keyed(name, old_rows, new_rows, keys):
    o, n = by(old_rows, keys), by(new_rows, keys)
    if set(o) != set(n):
        diffs.append(
            f"{name}: {len(set(o) - set(n))} rows only in old, {len(set(n) - set(o))} only in new; e.g. {sorted(set(o) ^ set(n), key=str)[:3]}"
        )
    for k in sorted(set(o) & set(n), key=str):
        stats[f"{name} rows"] += 1
        compare(f"{name}{list(k)}", o[k], n[k])


def main():
    old, new = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    if "tasks" in old:  # a benchmark (or demo) report
        for to, tn in zip(old["tasks"], new["tasks"]):
            for key, ident in (
                ("records", ("task", "method", "n_cal", "alpha", "split")),
                ("model", ("task", "method", "n_cal", "split")),
                ("validity", ("task", "method", "alpha")),
                ("sets_records", ("task", "method", "alpha", "split")),
                ("sets_validity", ("task", "method", "alpha")),
            ):
                compare_keyed(key, to.get(key, []), tn.get(key, []), ident)
            compare("tasks.rows", to["rows"], tn["rows"])
            compare("tasks.notes", to["notes"], tn["notes"])
        compare_keyed("summary", old["summary"], new["summary"], ("task", "method", "n_cal", "alpha"))
        compare_keyed("results", old["results"], new["results"], ("task", "method", "n_cal", "alpha", "split", "metric"))
        for k in ("rows", "multiclass_rows"):
            if k in old:
                for i, (x, y) in enumerate(zip(old[k], new[k])):
                    x, y = dict(x), dict(y)
                    x.pop("seconds", None), y.pop("seconds", None)
                    compare(f"{k}[{i}]", x, y)
    else:  # a compare result
        compare_keyed("splits", old["splits"], new["splits"], ("method", "alpha", "split"))
        compare_keyed("summary", old["summary"], new["summary"], ("method", "alpha"))
        compare("model", old["model"], new["model"])
        for k in ("alphas", "n_cal", "n_splits", "seed", "n_images", "n_groups", "n_empty_truth", "methods", "groups_from"):
            compare(k, old.get(k), new.get(k))
    print(f"compared {stats['values']} values ({', '.join(f'{v} {k}' for k, v in stats.items() if k != 'values')})")
    print(f"{len(diffs)} differ")
    for d in diffs[:60]:
        print("  DIFF", d)
    for (k, side), c in sorted(only.items()):
        print(f"  only in {side}: {k} ({c}×)")


if __name__ == "__main__":
    main()
