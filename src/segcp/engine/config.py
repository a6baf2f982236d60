"""A plan's configuration (:class:`PlanConfig`): `segcp benchmark`'s TOML file (docs/benchmark.md), or compare's
flags. Every key is checked (one-line errors naming the file and the key); paths expand ``~``, ``${VAR}`` and
``${VAR:-default}`` and resolve against the file's folder. (In TOML, keys after ``[[task]]`` belong to it.)
"""

from __future__ import annotations

import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from segcp.errors import SegcpError
from segcp.specs import MethodSpec, TunedSpec, parse_spec

__all__ = ["AblationConfig", "FigureConfig", "MethodEntry", "PlanConfig", "SetsConfig", "TaskConfig", "load_config", "parse_config"]

#: Named tasks (no data directory needed).
NAMED_TASKS = ("synthetic",)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class TaskConfig:
    """One task: a data directory (``data``) or a named task (``synthetic``) and its options."""

    name: str
    data: Any = None  # a data directory (Path) or its folders (segcp.io.datadir.DataSpec); None: a named task
    label: int | None = None
    title: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # named-task options (synthetic: n, seed, shape)


@dataclass(frozen=True)
class MethodEntry:
    """One method row: its spec (``parse_spec`` text form) and the tasks it runs on (None: all)."""

    text: str
    spec: MethodSpec | TunedSpec
    tasks: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True)
class AblationConfig:
    """RW-CP's ablations at one α: calibration sizes (its Table 2), one table per varied parameter (Tables 3-4, Fig. 3)."""

    method: str | None = None  # label of the varied row (default: the first row whose family has every varied parameter)
    alpha: float = 0.1
    n_cal: tuple[int, ...] = ()
    n_cal_methods: tuple[str, ...] | None = field(default=None, metadata={"read": False})  # rows of the n_cal table (default: every pixel-set row)
    params: dict[str, tuple[Any, ...]] = field(default_factory=dict, metadata={"read": False})


@dataclass(frozen=True)
class SetsConfig:
    """Sets of segmentations (CONSIGN, APS): calibration, draws and their metrics."""

    alphas: tuple[float, ...] = field(default=(0.1,), metadata={"key": "alpha"})
    splits: int | None = field(default=None, metadata={"low": 1})  # default: the top-level splits
    n_cal: int | None = field(default=None, metadata={"low": 1})  # default: the top-level n_cal
    draws: int = field(default=200, metadata={"low": 2})
    sizes: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    draw_images: int = field(default=8, metadata={"low": 1})
    validity_splits: int = field(default=500, metadata={"low": 0})
    show_draws: int = field(default=5, metadata={"low": 1})
    max_images: int | None = field(default=None, metadata={"low": 4})  # use only the images of the first groups, up to this many


@dataclass(frozen=True)
class FigureConfig:
    overlay_alpha: float = 0.1
    overlay_images: int = field(default=3, metadata={"low": 1})
    dpi: int = field(default=80, metadata={"low": 30})


@dataclass(frozen=True)
class PlanConfig:
    """A validated plan (docs/benchmark.md); ``baseline``: the row others are compared with (default the first)."""

    path: Path | None = field(default=None, metadata={"read": False})
    text: str = field(default="", metadata={"read": False})
    title: str = "segcp benchmark"
    description: str = ""
    seed: int = field(default=0, metadata={"low": 0})
    splits: int = field(default=20, metadata={"low": 1})
    n_cal: int = field(default=20, metadata={"low": 1})
    alphas: tuple[float, ...] = (0.2, 0.1, 0.05)
    curve_alphas: tuple[float, ...] = ()  # default (in a config file): alphas
    validity_splits: int = field(default=1000, metadata={"low": 0})
    jobs: int = field(default=1, metadata={"low": 1})
    tasks: tuple[TaskConfig, ...] = field(default=(), metadata={"read": False})
    methods: tuple[MethodEntry, ...] = field(default=(), metadata={"read": False})
    ablation: AblationConfig | None = field(default=None, metadata={"read": False})
    sets: SetsConfig = field(default_factory=SetsConfig, metadata={"read": False})
    figures: FigureConfig = field(default_factory=FigureConfig, metadata={"read": False})
    baseline: str | None = None

    def methods_for(self, task: str) -> list[MethodEntry]:
        return [m for m in self.methods if m.tasks is None or task in m.tasks]

    @property
    def baseline_label(self) -> str | None:
        return self.baseline if self.baseline is not None else (self.methods[0].label if self.methods else None)


def _twice(names: list[str]) -> str | None:
    """The first (sorted) name given twice, or None."""
    return min((n for n in names if names.count(n) > 1), default=None)


def unique_labels(labels: list[str], where: str) -> None:
    """One-line error when two rows share a label (their records would merge)."""
    if (dup := _twice(labels)) is not None:
        raise SegcpError(f"{where}: label {dup!r} is used twice; give each row its own @LABEL")


def load_config(path: str | os.PathLike[str]) -> PlanConfig:
    """Read and validate a benchmark TOML file (one-line errors naming the file and the key)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SegcpError(f"{p}: cannot read the config ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise SegcpError(f"{p}: the config is not UTF-8 text") from None
    return parse_config(text, p)


def parse_config(text: str, path: str | os.PathLike[str] | None = None) -> PlanConfig:
    """Validate the TOML ``text`` (``path``: where it came from; relative paths resolve there)."""
    where = str(path) if path is not None else "config"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SegcpError(f"{where}: not valid TOML ({exc})") from None
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    r = _Reader(doc, where, "")
    if "jobs" in doc:
        sys.stderr.write(f"segcp: warning: {where}: jobs is deprecated; use segcp benchmark --workers N\n")
    tasks = tuple(_task(t, where, i, base) for i, t in enumerate(r.tables("task", required=True)))
    names = [t.name for t in tasks]
    if (dup := _twice(names)) is not None:
        raise SegcpError(f"{where}: task name {dup!r} is used twice")
    methods = tuple(_method(m, where, i, names) for i, m in enumerate(r.array("methods", required=True) or []))
    labels = [m.label for m in methods]
    unique_labels(labels, f"{where}: methods")
    ablation = _ablation(r.table("ablation"), where, labels) if "ablation" in doc else None
    sets = _fill(SetsConfig, _Reader(r.table("sets") if "sets" in doc else {}, where, "sets."))
    sets = replace(sets, sizes=tuple(sorted({s for s in sets.sizes if s <= sets.draws} | {sets.draws})))
    figures = _fill(FigureConfig, _Reader(r.table("figures") if "figures" in doc else {}, where, "figures."))
    parts = {"tasks": tasks, "methods": methods, "ablation": ablation, "sets": sets, "figures": figures}
    cfg = _fill(PlanConfig, r, path=Path(path).resolve() if path is not None else None, text=text, **parts)
    if cfg.baseline is not None and cfg.baseline not in labels:
        raise SegcpError(f"{where}: baseline: no method labelled {cfg.baseline!r} (labels: {', '.join(labels)})")
    return cfg if "curve_alphas" in doc else replace(cfg, curve_alphas=cfg.alphas)


def _fill(cls: Any, r: _Reader, **given: Any) -> Any:
    """A config dataclass from one TOML table, each field read by its type (metadata ``low``, ``key``; ``read``
    False: given); other keys refused."""
    kw = dict(given)
    for f in fields(cls):
        if f.metadata.get("read", True) and f.name not in kw:
            v = r.typed(f.metadata.get("key", f.name), str(f.type), f.metadata.get("low"))
            if v is not None:
                kw[f.name] = v
    r.done()
    return cls(**kw)


def expand_path(raw: str, base: Path, where: str) -> Path:
    """``~``, ``${VAR}`` and ``${VAR:-default}`` expanded; relative paths against ``base``."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise SegcpError(f"{where}: ${{{m.group(1)}}} is not set (write ${{{m.group(1)}:-default}} for a default)")

    p = Path(os.path.expanduser(_VAR.sub(sub, raw)))
    return Path(os.path.normpath(p if p.is_absolute() else (base / p)))


def _task(t: dict[str, Any], where: str, i: int, base: Path) -> TaskConfig:
    r = _Reader(t, where, f"task[{i}].")
    name = r.typed("name", "str")
    if not name:
        raise SegcpError(f"{where}: task[{i}] needs a name")
    data, label, title = r.typed("data", "str"), r.typed("label", "int"), r.typed("title", "str")
    options: dict[str, Any] = {}
    if data is None:
        if name not in NAMED_TASKS:
            raise SegcpError(f'{where}: task {name!r}: give data = "DIR" (a data directory), or use a named task ({", ".join(NAMED_TASKS)})')
        options = {"n": r.typed("n", "int", 40) or 200, "seed": r.typed("seed", "int", 0) or 0, "size": r.typed("size", "int", 32) or 128}
    path = None if data is None else expand_path(data, base, f"{where}: task {name!r}")
    r.done()
    return TaskConfig(name=name, data=path, label=label, title=title, options=options)


def _method(m: Any, where: str, i: int, tasks: list[str]) -> MethodEntry:
    if isinstance(m, str):
        text, only = m, None
    elif isinstance(m, dict):
        r = _Reader(m, where, f"methods[{i}].")
        text = r.typed("spec", "str")
        if not text:
            raise SegcpError(f'{where}: methods[{i}] needs spec = "NAME[:KEY=VALUE,...][@LABEL]"')
        only_list = r.array("tasks", required=False)
        r.done()
        only = None if only_list is None else tuple(str(x) for x in only_list)
        if only is not None:
            unknown = [x for x in only if x not in tasks]
            if unknown:
                raise SegcpError(f"{where}: methods[{i}].tasks: no task named {unknown[0]!r} (tasks: {', '.join(tasks)})")
    else:
        raise SegcpError(f"{where}: methods[{i}] must be a string or a table, got {m!r}")
    try:
        spec = parse_spec(text)
        for c in spec.candidates:
            c.build()  # validates the family and its parameters
    except SegcpError as exc:
        raise SegcpError(f"{where}: methods[{i}] {text!r}: {exc}") from None
    return MethodEntry(text=text, spec=spec, tasks=only)


def _ablation(t: dict[str, Any], where: str, labels: list[str]) -> AblationConfig:
    r = _Reader(t, where, "ablation.")
    n_cal_methods = r.array("n_cal_methods", required=False)
    bad = [x for x in n_cal_methods or [] if x not in labels]
    if bad:
        raise SegcpError(f"{where}: ablation.n_cal_methods: no method labelled {bad[0]!r}")
    params: dict[str, tuple[Any, ...]] = {}
    for key, values in (r.table("params") if "params" in t else {}).items():
        if not isinstance(values, list) or not values:
            raise SegcpError(f"{where}: ablation.params.{key} must be a non-empty list of values")
        params[key.replace("-", "_")] = tuple(values)
    cfg = _fill(AblationConfig, r, n_cal_methods=None if n_cal_methods is None else tuple(n_cal_methods), params=params)
    if cfg.method is not None and cfg.method not in labels:
        raise SegcpError(f"{where}: ablation.method: no method labelled {cfg.method!r} (labels: {', '.join(labels)})")
    return cfg


class _Reader:
    """Typed reads of one TOML table; :meth:`done` refuses the keys nobody read."""

    def __init__(self, doc: dict[str, Any], where: str, prefix: str) -> None:
        self.doc, self.where, self.prefix = doc, where, prefix
        self.seen: set[str] = set()

    def _err(self, key: str, what: str, value: Any) -> SegcpError:
        return SegcpError(f"{self.where}: {self.prefix}{key} must be {what}, got {value!r}")

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.doc.get(key)

    def done(self) -> None:
        extra = [k for k in self.doc if k not in self.seen]
        if extra:
            raise SegcpError(f"{self.where}: unknown key {self.prefix}{extra[0]} (known here: {', '.join(sorted(self.seen))})")

    def _alpha(self, key: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < float(v) < 1.0) or not math.isfinite(float(v)):
            raise self._err(key, "a risk level in (0, 1)", v)
        return float(v)

    def typed(self, key: str, kind: str, low: int | None = None) -> Any:
        """The value of ``key`` checked as a field of type ``kind`` (None when absent)."""
        v = self._get(key)
        if v is not None and kind.startswith("str") and not isinstance(v, str):
            raise self._err(key, "a string", v)
        if v is not None and kind.startswith("int") and (isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low)):
            raise self._err(key, "an integer" + (f" >= {low}" if low is not None else ""), v)
        if v is None or kind.startswith(("str", "int")):
            return v
        if kind == "float":
            return self._alpha(key, v)
        if kind == "tuple[int, ...]":
            if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) or x < (low or 1) for x in v):
                raise self._err(key, f"a list of integers >= {low or 1}", v)
            return tuple(int(x) for x in v)
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if not isinstance(v, list) or not v:
            raise self._err(key, "a non-empty list of risk levels in (0, 1)", v)
        out = tuple(self._alpha(key, x) for x in v)
        if len(set(out)) != len(out):
            raise self._err(key, "a list of distinct risk levels", v)
        return out

    def array(self, key: str, required: bool) -> list[Any] | None:
        v = self._get(key)
        if v is None:
            if required:
                raise SegcpError(f"{self.where}: {self.prefix}{key} is missing")
            return None
        if not isinstance(v, list) or (required and not v):
            raise self._err(key, "a non-empty list", v)
        return v

    def table(self, key: str) -> dict[str, Any]:
        v = self._get(key)
        if not isinstance(v, dict):
            raise self._err(key, "a table", v)
        return v

    def tables(self, key: str, required: bool) -> list[dict[str, Any]]:
        v = self._get(key)
        if v is None:
            if required:
                raise SegcpError(f"{self.where}: no [[{self.prefix}{key}]] table: name at least one task")
            return []
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self._err(key, "an array of tables ([[task]])", v)
        return v
