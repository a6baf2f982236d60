"""The ``segcp`` command line: calibrate, predict, evaluate, compare, tune, demo, train, infer.

Every set family (``segcp methods``) goes through the same commands; its own options
(``--se``, ``--encoder``, ``--K``, ``--beta``…) come from the family's declared parameters
(:mod:`segcp.methods.base`), and every parameter can also be given as ``-p NAME=VALUE``.
Every bad input ends with one line on stderr, ``segcp: error: <file or option>: <problem>``,
and exit status 2; result files are written atomically, so nothing partial is left behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from segcp._version import __version__
from segcp.errors import SegcpError

app = typer.Typer(
    name="segcp",
    help="Conformal prediction sets with finite-sample guarantees for medical image segmentation.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Options that are about how a job runs, not about the sets (never recorded in calib.json).
RUNTIME_KEYS = ("n_jobs",)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segcp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """segcp: conformal prediction sets for segmentation models."""


class MethodCommand(TyperCommand):
    """A command that also takes the chosen method's own options (listed in its help)."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        from segcp.methods import available_methods, family_class

        super().format_epilog(ctx, formatter)
        rows = []
        for name in available_methods():
            for key, decl in family_class(name).declared().items():
                if decl.flag:
                    rows.append((f"{decl.flag} {decl.hint()}", f"{name}: {decl.help} (-p {key}=...)"))
        with formatter.section("Method options (also as -p NAME=VALUE; `segcp methods` lists all)"):
            formatter.write_dl(rows)


def _method_options(method: str, args: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """Add the method's own options (``--se cross``, ``--K 5``…) found in ``args`` to ``params``."""
    from segcp.methods import family_class
    from segcp.specs import parse_value

    decl = family_class(method).declared()
    flags = {d.flag: k for k, d in decl.items() if d.flag}
    old = {f: k for k, d in decl.items() for f in d.deprecated_flags}
    for name, key in family_class(method).renamed_params().items():
        if name in params:
            sys.stderr.write(f"segcp: warning: -p {name} for {method} is deprecated; use -p {key}=VALUE\n")
    i = 0
    while i < len(args):
        token = args[i]
        flag, eq, value = token.partition("=")
        if flag not in flags and flag not in old:
            from segcp.methods import available_methods

            owners = [m for m in available_methods() if any(d.flag == flag for d in family_class(m).declared().values())]
            hint = f" (an option of {', '.join(owners)})" if owners else ""
            known = ", ".join(sorted(flags)) or "none"
            raise SegcpError(f"{flag}: not an option of --method {method}{hint}; its options: {known}")
        if not eq:
            if i + 1 >= len(args):
                raise SegcpError(f"{flag}: expected a value")
            value = args[i + 1]
            i += 1
        i += 1
        key = flags.get(flag) or old[flag]
        if flag in old:
            new = decl[key].flag or f"-p {key}=VALUE"
            sys.stderr.write(f"segcp: warning: {flag} for {method} is deprecated; use {new} (or -p {key}=VALUE)\n")
        params[key] = parse_value(value)
    return params


def _split_runtime(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method parameters, job run-time options such as n_jobs)."""
    runtime = {k: params.pop(k) for k in RUNTIME_KEYS if k in params}
    return params, runtime


DataOpt = Annotated[
    Optional[Path], typer.Option("--data", help="Data directory with probs/ or samples/, masks/ (and images/); or give the folders one by one.")
]
ProbsOpt = Annotated[Optional[Path], typer.Option("--probs", help="Folder of the model outputs (e.g. an nnU-Net prediction folder: <case>.npz + <case>.nii.gz).")]
MasksOpt = Annotated[Optional[Path], typer.Option("--masks", help="Folder of the ground truth (e.g. nnU-Net's labelsTr).")]
ImagesOpt = Annotated[Optional[Path], typer.Option("--images", help="Folder of the images (image-aware methods).")]
SamplesOpt = Annotated[Optional[Path], typer.Option("--samples", help="Folder of sampled softmax maps (consign, aps).")]
MatchOpt = Annotated[
    Optional[list[str]], typer.Option("--match", help="KIND={id}SUFFIX: pair files by name, e.g. images={id}_0000 (nnU-Net) or probs={id}_prob (MONAI).")
]
DatasetJsonOpt = Annotated[Optional[Path], typer.Option("--dataset-json", help="nnU-Net dataset.json naming the labels (--labels by name).")]


def _data(data: Path | None, probs: Path | None, masks: Path | None, images: Path | None, samples: Path | None,
          match: list[str] | None, dataset_json: Path | None) -> Any:
    """The inputs of a command: a data directory, or folders given one by one (a DataSpec)."""
    from segcp.io.datadir import DataSpec

    patterns = {}
    for m in match or []:
        kind, eq, template = m.partition("=")
        if not eq or not template:
            raise SegcpError(f"--match {m!r}: expected KIND={{id}}SUFFIX, e.g. images={{id}}_0000")
        patterns[kind.strip()] = template
    folders = {"probs": probs, "masks": masks, "images": images, "samples": samples}
    if data is None and not any(folders.values()):
        raise SegcpError("give --data DIR, or the folders --probs/--samples and --masks (and --images)")
    if not patterns and not any(folders.values()) and dataset_json is None:
        return data
    return DataSpec.make(data, folders=folders, patterns=patterns, dataset_json=dataset_json)
LabelOpt = Annotated[
    Optional[int], typer.Option("--label", help="Structure label L: mask == L (and channel L of class-probability stacks).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]
ParamOpt = Annotated[
    Optional[list[str]], typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable); n_jobs=N runs N processes.")
]
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", help="Run on a local Dask cluster of N worker processes (needs segcp[dask]).")
]
SchedulerOpt = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Run on the existing Dask cluster at ADDRESS (default: $DASK_SCHEDULER_ADDRESS, when set)."),
]
ChunkOpt = Annotated[
    Optional[int], typer.Option("--chunk-size", help="Images per cluster task (default: about 8 tasks per worker, at most 64).")
]


@contextmanager
def _executor(workers: int | None, scheduler: str | None, quiet: bool, n_jobs: int = 1) -> Iterator[Any]:
    """Where the job's map step runs (:func:`segcp.cluster.open_executor`); says so unless quiet."""
    from segcp.cluster import open_executor

    if workers is not None and n_jobs > 1:
        raise SegcpError("-p n_jobs runs local processes and --workers a Dask cluster: give one of them")
    ex = open_executor(n_jobs, workers, scheduler)
    try:
        if not quiet and ex.where != "this process":
            sys.stderr.write(f"segcp: running on {ex.where}\n")
        yield ex
    finally:
        ex.close()


@app.command(cls=MethodCommand, context_settings=EXTRA)
def calibrate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Where to write the calibration JSON.")],
    alpha: Annotated[Optional[list[float]], typer.Option("--alpha", help="Risk level in (0, 1) (repeat for several).")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="Set method (see `segcp methods`).")] = "threshold",
    label: LabelOpt = None,
    guarantee: Annotated[
        Optional[str],
        typer.Option(
            "--guarantee",
            help="fnr: E[FNR] <= alpha (risk control); quantile: P(coverage >= tau) >= 1 - alpha; "
            "contains (consign, aps): P(truth in the set up to beta) >= 1 - alpha. Default: the method's.",
        ),
    ] = None,
    tau: Annotated[float, typer.Option("--tau", help="Coverage ratio for --guarantee quantile.")] = 1.0,
    labels: Annotated[
        Optional[str], typer.Option("--labels", help="Every structure in one call: 'all', or labels by number or dataset.json name, e.g. 1,2,3 or RV,LV.")
    ] = None,
    param: ParamOpt = None,
    curves: Annotated[
        str,
        typer.Option(
            "--curves",
            help="auto: exact loss curves while they hold <= 2^26 breakpoints, else compact; exact; compact: the summed "
            "risk on a fixed lambda grid (memory independent of n; lambda at most one grid step above exact).",
        ),
    ] = "auto",
    grid_size: Annotated[int, typer.Option("--grid-size", help="Points of the compact curves' lambda grid.")] = 2**16,
    grid_max: Annotated[
        Optional[float], typer.Option("--grid-max", help="Compact grid: the largest lambda, for methods whose lambda is unbounded (morph ball: mm).")
    ] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    chunk_size: ChunkOpt = None,
    data: DataOpt = None,
    probs: ProbsOpt = None,
    masks: MasksOpt = None,
    images: ImagesOpt = None,
    samples: SamplesOpt = None,
    match: MatchOpt = None,
    dataset_json: DatasetJsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Calibrate a method on a labelled data directory and write calib.json."""
    from segcp.pipeline import calibrate_dir
    from segcp.specs import parse_params

    params, runtime = _split_runtime(_method_options(method, list(ctx.args), parse_params(param)))
    alphas = alpha or [0.1]
    n_jobs = int(runtime.get("n_jobs", 1))
    with _executor(workers, scheduler, quiet, n_jobs) as ex:
        record = calibrate_dir(
            _data(data, probs, masks, images, samples, match, dataset_json),
            method=method,
            alpha=alphas[0] if len(alphas) == 1 else alphas,
            label=label,
            guarantee=guarantee,
            tau=tau,
            method_params=params,
            out=out,
            show_progress=not quiet,
            n_jobs=n_jobs,
            executor=ex,
            chunk_size=chunk_size,
            curve_form=curves,
            grid_size=grid_size,
            grid_max=grid_max,
            labels=labels,
        )
    if quiet:
        return
    for entry in record.get("structures", [record]):
        lams = entry["lambda"] if isinstance(entry["lambda"], list) else [entry["lambda"]]
        stmts = entry["statement"] if isinstance(entry["statement"], list) else [entry["statement"]]
        what = f" {entry['name']} (label {entry['label']})" if "name" in entry else ""
        for lam, stmt in zip(lams, stmts):
            typer.echo(f"{record['method']}{what}: lambda = {lam:.6g} from n = {record['n']} images ({stmt}) -> {out}")
    if "curves" in record:
        g = record["curves"]["grid"]
        step = (g["hi"] - g["lo"]) / (g["size"] - 1)
        typer.echo(
            f"compact curves: a {g['size']}-point grid over [{g['lo']:g}, {g['hi']:g}]; lambda is the first grid point "
            f"at or above the exact one (at most {step:.3g} larger)"
        )


@app.command()
def predict(
    calib: Annotated[Path, typer.Option("--calib", help="calib.json written by `segcp calibrate`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the sets, one <id>.npy per image.")],
    draws: Annotated[
        int, typer.Option("--draws", help="Sets of segmentations (consign, aps): segmentations drawn per image (S, *spatial).")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draws.")] = 0,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Which alpha of a calibration made at several.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing, non-empty --out folder (whole).")] = False,
    combined: Annotated[
        bool, typer.Option("--combined", help="Per-structure calibrations: also one bit-coded file per case (out/combined/).")
    ] = False,
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="Run-time option or location NAME=VALUE, e.g. -p encoder=DIR -p threads=1.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Write each set into --out as it is made; a rerun skips the sets already there and whole."),
    ] = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    chunk_size: ChunkOpt = None,
    data: DataOpt = None,
    probs: ProbsOpt = None,
    masks: MasksOpt = None,
    images: ImagesOpt = None,
    samples: SamplesOpt = None,
    match: MatchOpt = None,
    dataset_json: DatasetJsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the calibrated prediction set of every image: a boolean mask (pixel sets) or
    --draws segmentations drawn from the set (sets of segmentations)."""
    from segcp.pipeline import predict_dir
    from segcp.specs import parse_params

    with _executor(workers, scheduler, quiet) as ex:
        written = predict_dir(
            calib, _data(data, probs, masks, images, samples, match, dataset_json), out, show_progress=not quiet, draws=draws,
            seed=seed, alpha=alpha, overwrite=overwrite, overrides=parse_params(param), combined=combined, resume=resume,
            executor=ex, chunk_size=chunk_size,
        )
    if not quiet:
        typer.echo(f"wrote {len(written)} sets to {out}")


@app.command()
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="Where to write metrics JSON.")],
    sets: Annotated[
        Optional[Path], typer.Option("--sets", help="Folder of <id>.npy sets (from `segcp predict`).")
    ] = None,
    label: LabelOpt = None,
    calib: Annotated[
        Optional[Path], typer.Option("--calib", help="Or: calib.json; the sets are made on the fly (sets of segmentations: drawn).")
    ] = None,
    draws: Annotated[int, typer.Option("--draws", help="Sets of segmentations: segmentations drawn per image.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draws.")] = 0,
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="With --calib: run-time option or location NAME=VALUE.")
    ] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    chunk_size: ChunkOpt = None,
    data: DataOpt = None,
    probs: ProbsOpt = None,
    masks: MasksOpt = None,
    images: ImagesOpt = None,
    samples: SamplesOpt = None,
    match: MatchOpt = None,
    dataset_json: DatasetJsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Coverage, FNR, stretch, Dice, HD95 and ASSD of sets against the masks (or, for sets of
    segmentations with --calib: coverage, SEC, Chao1 and correlation of drawn segmentations)."""
    from segcp.pipeline import evaluate_dir
    from segcp.report import metrics_table
    from segcp.specs import parse_params

    with _executor(workers, scheduler, quiet) as ex:
        result = evaluate_dir(
            sets, _data(data, probs, masks, images, samples, match, dataset_json), label=label, out=out, show_progress=not quiet,
            calib=calib, draws=draws, seed=seed, overrides=parse_params(param), executor=ex, chunk_size=chunk_size,
        )
    if quiet:
        return
    if "structures" in result:
        for name, st in result["structures"].items():
            metrics_table({name: st}, title=f"{name} (label {st['label']}): {st['n']} images, distances in {result['distance_units']}")
        return
    if "draws" in result:
        m = result["mean"]
        typer.echo(
            f"{result['method']} (lambda = {result['lambda']:.6g}), {result['n']} images, {draws} draws each: "
            f"coverage {m['covered']:.3f}, SEC {m['sec']:.3f}, Chao1 {m['chao']:.4g}, "
            f"|correlation| {m['correlation']:.3f} -> {out}"
        )
        return
    metrics_table({"sets": result}, title=f"{result['n']} images, distances in {result['distance_units']}")


@app.command()
def methods() -> None:
    """List the set methods, what they read and their parameters."""
    from segcp.methods import available_methods, family_class

    for name in available_methods():
        cls = family_class(name)
        typer.echo(f"{name}: {cls.summary}")
        typer.echo(f"  guarantees: {', '.join(cls.guarantees)}; lambda in [{cls.lambda_min:g}, {cls.lambda_max:g}]")
        for key, decl in cls.declared().items():
            flag = f" ({decl.flag})" if decl.flag else ""
            kind = " [run-time]" if decl.runtime else ""
            typer.echo(f"  -p {key}={decl.hint()}{flag}{kind}: {decl.help}; default {decl.default!r}")


@app.command()
def compare(
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, report.md and summary.png.")],
    method: Annotated[
        Optional[list[str]],
        typer.Option(
            "--method",
            "-m",
            help="NAME[:KEY=VALUE,...][@LABEL], repeatable; the first is the baseline. KEY=V1|V2 tunes KEY per split on the calibration images.",
        ),
    ] = None,
    alpha: Annotated[Optional[list[float]], typer.Option("--alpha", help="Risk levels (repeatable).")] = None,
    n_cal: Annotated[int, typer.Option("--n-cal", help="Calibration images per split (whole groups).")] = 20,
    splits: Annotated[int, typer.Option("--splits", help="Number of random calibration/test splits.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the splits.")] = 0,
    label: LabelOpt = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Report title.")] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    chunk_size: ChunkOpt = None,
    data: DataOpt = None,
    probs: ProbsOpt = None,
    masks: MasksOpt = None,
    images: ImagesOpt = None,
    samples: SamplesOpt = None,
    match: MatchOpt = None,
    dataset_json: DatasetJsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare methods over repeated calibration/test splits of a labelled data directory.

    Groups (patients) come from segcp_export.json or groups.json in DIR; without them every
    image is its own group.
    """
    from segcp.compare import compare_dir, markdown_summary
    from segcp.specs import parse_spec

    specs = [parse_spec(m) for m in (method or ["threshold", "morph:se=cross"])]
    with _executor(workers, scheduler, quiet) as ex:
        result = compare_dir(
            _data(data, probs, masks, images, samples, match, dataset_json),
            specs,
            label=label,
            alphas=alpha or [0.2, 0.1, 0.05],
            n_cal=n_cal,
            n_splits=splits,
            seed=seed,
            out=out,
            title=title,
            show_progress=not quiet,
            executor=ex,
            chunk_size=chunk_size,
        )
    if not quiet:
        typer.echo(markdown_summary(result))
        typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'summary.png'}")


@app.command()
def tune(
    method: Annotated[str, typer.Option("--method", "-m", help="Set method to tune (see `segcp methods`).")],
    grid: Annotated[
        list[str], typer.Option("--grid", "-g", help="KEY=V1|V2|... values to try (repeatable; the product is searched).")
    ],
    alpha: Annotated[float, typer.Option("--alpha", help="Risk level the sets are calibrated at inside each fold.")] = 0.1,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Fixed KEY=VALUE method parameters.")] = None,
    criterion: Annotated[
        str, typer.Option("--criterion", help="dice (max), hd95, stretch (|C|/|Y_hat|) or truth_ratio (|C|/|Y|) (min) of the held-out folds' sets.")
    ] = "dice",
    folds: Annotated[int, typer.Option("--folds", help="Group K-fold cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 0,
    label: LabelOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the CV table and the best params as JSON.")] = None,
    data: DataOpt = None,
    probs: ProbsOpt = None,
    masks: MasksOpt = None,
    images: ImagesOpt = None,
    samples: SamplesOpt = None,
    match: MatchOpt = None,
    dataset_json: DatasetJsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Choose a method's hyper-parameters on CALIBRATION data only (group K-fold CV).

    For each candidate, λ̂ is calibrated by exact CRC on K−1 folds (whole patients/groups) at
    --alpha and the sets are scored on the held-out fold; the best mean wins. Give it your
    calibration (or a separate tuning) directory, never test data; then `segcp calibrate` with
    the printed parameters. Tuning and calibrating on the same images makes the guarantee
    approximate (docs/tuning.md); for a strict one, tune on images you do not calibrate on.
    """
    from segcp.compare import load_labelled_dir
    from segcp.io import write_json
    from segcp.specs import grid_candidates, grid_values, parse_params
    from segcp.tuning import tune as run_tune

    values: dict[str, list[Any]] = {}
    for g in grid:
        key, eq, raw = g.partition("=")
        if not eq or not raw:
            raise SegcpError(f"--grid {g!r}: expected KEY=V1|V2|...")
        k, vals = grid_values(key, raw)
        values[k] = vals
    if folds < 2:
        raise SegcpError(f"--folds {folds}: cross-validation needs at least 2 folds")
    cands = grid_candidates(method, parse_params(param), values)
    source_data = _data(data, probs, masks, images, samples, match, dataset_json)
    if out is not None:
        from segcp.io import check_output
        from segcp.io.datadir import data_inputs

        check_output(out, data_inputs(source_data))
    cases, groups, source = load_labelled_dir(source_data, cands, label=label, show_progress=not quiet)
    ids = [c.id for c in cases]
    res = run_tune(cases, groups, cands, alpha, criterion=criterion, folds=folds, seed=seed, show_progress=not quiet)
    from segcp.io.datadir import describe_data

    record = res.to_dict() | {"data": describe_data(source_data), "groups_from": source, "n_images": len(ids), "n_groups": len(set(groups))}
    if out is not None:
        write_json(out, record)
    if not quiet:
        typer.echo(f"{len(ids)} images in {len(set(groups))} groups ({source}); {folds}-fold CV at alpha={alpha:g}, criterion {criterion}")
        if res.table and res.table[0]["alpha"] != alpha:
            typer.echo(f"(the training folds are too small for alpha={alpha:g}: CV at alpha={res.table[0]['alpha']:.3g}, the smallest they admit)")
        for row in res.table:
            mark = "*" if row["candidate"] == res.best_index else " "
            extra = f"  ({row['infeasible_folds']} infeasible folds)" if row["infeasible_folds"] else ""
            typer.echo(f"{mark} {row['label']:<40} {criterion} {row['value']:.4f}{extra}")
        typer.echo("best: " + " ".join(f"--param {k}={v}" for k, v in res.best.params.items()))
        if out is not None:
            typer.echo(f"wrote {out}")


@app.command()
def benchmark(
    config: Annotated[Path, typer.Option("--config", help="The benchmark's TOML file (tasks, methods, α, splits, ablations; docs/benchmark.md).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: report.html (self-contained), report.md, figures, results.json, results.csv.")],
    cache: Annotated[
        Optional[Path], typer.Option("--cache", help="Cache folder (default: $SEGCP_CACHE/benchmark, else ~/.cache/segcp/benchmark).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute everything; read and write no cache.")] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", help="Worker processes for score maps and scores (default: the config's jobs, 1).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the papers' tables, ablations and figures on your data, cached by content.

    A second run recomputes only what is new (one more alpha, method or split). The report
    folder is replaced whole at the end; an existing folder must be a previous report.
    """
    from segcp.benchmark.run import run_benchmark

    if jobs is not None and jobs < 1:
        raise SegcpError(f"--jobs {jobs}: must be a positive integer")
    result = run_benchmark(config, out, cache_dir=cache, use_cache=not no_cache, show_progress=not quiet, jobs=jobs)
    if not quiet:
        c = result["cache"]
        typer.echo(
            f"wrote {out / 'report.html'}, report.md, results.json, results.csv in {result['seconds']:.1f} s "
            f"(split records: {c['hits']['records']} from the cache, {c['misses']['records']} computed)"
        )


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder: report.html, report.md, figures, results.json, results.csv.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of synthetic images (half of them calibrate each split).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the phantoms and the splits.")] = 0,
    cache: Annotated[
        Optional[Path], typer.Option("--cache", help="Benchmark cache folder (default: $SEGCP_CACHE/benchmark, else ~/.cache/segcp/benchmark).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every method on built-in SYNTHETIC phantoms (segcp benchmark; no data needed)."""
    from segcp.demo import run_demo

    run_demo(out=out, n=n, seed=seed, show_progress=not quiet, cache_dir=cache)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Where to write the model checkpoint (.pt).")],
    task: Annotated[
        Optional[str],
        typer.Option("--task", help="Task to train on (acdc-lv, acdc-rv, acdc, busi, la2018, acdc-3d): its training patients."),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Or: a data directory with images/ and masks/ (2D images or 3D volumes: trained on their slices; all of it is training data; pre-split by patient).",
        ),
    ] = None,
    label: LabelOpt = None,
    preset: Annotated[str, typer.Option("--preset", help="cpu (default, <= 15 min on 2 cores) or paper (512 px, 200 epochs, GPU).")] = "cpu",
    epochs: Annotated[
        Optional[int], typer.Option("--epochs", help="Training epochs (default: cpu preset = as many as make --steps).")
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option("--steps", help="Without --epochs: about this many optimisation steps (cpu preset: 1100).")
    ] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Training size S (images resized to S x S, multiple of 16).")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="UNet base width.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size.")] = None,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout p in the UNet blocks (MC dropout); 0 = none.")] = 0.0,
    dropout_levels: Annotated[
        int, typer.Option("--dropout-from-level", help="Dropout only in blocks at level >= K (2 = central blocks, 0 = all).")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Training seed (deep ensembles: one model per seed).")] = 0,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the task's train/calibration/test split.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (default: torch's choice).")] = None,
    max_minutes: Annotated[
        Optional[float], typer.Option("--max-minutes", help="Stop after M minutes, keeping the best model so far.")
    ] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Flips, small rotations, intensity jitter.")] = True,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Fraction of training patients/groups held out for model selection.")
    ] = 0.1,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu (default), cuda, cuda:1, ...")] = "cpu",
    loss: Annotated[
        str, typer.Option("--loss", help="ce (cross-entropy, default) or dice_ce (nnU-Net's soft Dice + cross-entropy).")
    ] = "ce",
    slice_axis: Annotated[
        Optional[int],
        typer.Option("--slice-axis", help="--data volumes: train on slices along this axis (default: the coarsest spacing, ties -> last)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a UNet on a task's training patients or on a data directory (2D images, or the slices of 3D volumes)."""
    from segcp.models import require_torch

    require_torch()
    from segcp.models.train import TrainConfig, train_datadir, train_task

    if (task is None) == (data is None):
        raise SegcpError("train needs either --task T or --data DIR (not both)")
    if data is not None:
        from segcp.io.datadir import data_inputs
        from segcp.io import check_output

        check_output(out, data_inputs(data))
    if task is not None and label is not None:
        raise SegcpError("--label is for --data; a task defines its own target")
    if task is not None and slice_axis is not None:
        raise SegcpError("--slice-axis is for --data; a volume task defines its own slice axis")
    cfg = TrainConfig.from_preset(
        preset, epochs=epochs, steps=steps, size=size, width=width, batch_size=batch, dropout=dropout, dropout_from_level=dropout_levels, seed=seed,
        threads=threads, max_minutes=max_minutes, augment=augment, val_fraction=val_fraction, device=device, loss=loss,
    )
    if task is not None:
        meta = train_task(task, out, cfg, split_seed=split_seed, show_progress=not quiet)
    else:
        meta = train_datadir(data, out, cfg, label=label, show_progress=not quiet, slice_axis=slice_axis)  # type: ignore[arg-type]
    if not quiet:
        m = meta["metrics"]
        vd = "n/a" if m["val_dice"] is None else f"{m['val_dice']:.4f}"
        typer.echo(
            f"trained {meta['n_classes']}-class UNet ({m['train_images']} images, best epoch {m['best_epoch']}, "
            f"validation Dice {vd}, {m['train_seconds'] / 60:.1f} min"
            + (", stopped at --max-minutes" if m["stopped_early"] else "")
            + f") -> {out}"
        )


@app.command()
def infer(
    model: Annotated[list[Path], typer.Option("--model", help="Model checkpoint; repeat for a deep ensemble.")],
    out: Annotated[Path, typer.Option("--out", help="Output data directory (images/, masks/, probs/, samples/).")],
    task: Annotated[Optional[str], typer.Option("--task", help="Task the model was trained on.")] = None,
    split: Annotated[
        Optional[str], typer.Option("--split", help="calibration, test or pool (= calibration + test) of the model's split.")
    ] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Or: a data directory with images/ (and masks/).")] = None,
    samples: Annotated[
        Optional[int], typer.Option("--samples", help="Write N softmax samples per image (MC dropout / ensemble members).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the MC-dropout masks.")] = 0,
    batch: Annotated[int, typer.Option("--batch", help="Images (or MC passes) per forward pass.")] = 16,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing, non-empty --out.")] = False,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu (default), cuda, ...")] = "cpu",
    slice_axis: Annotated[
        Optional[int],
        typer.Option("--slice-axis", help="3D volumes: run the 2D model along this axis (default: the coarsest spacing, ties -> last)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Probability maps (and samples) of one model or an ensemble, on the original image grid.

    3D images (volume tasks la2018 / acdc-3d, or NIfTI volumes in --data) are run slice by
    slice and written as volumes on the image's grid and header.
    """
    from segcp.models import require_torch

    require_torch()
    from segcp.models.infer import infer_to_dir

    if (task is None) == (data is None):
        raise SegcpError("infer needs either --task T --split PART or --data DIR (not both)")
    if task is not None and split is None:
        raise SegcpError("--task needs --split calibration|test|pool")
    if data is not None and split is not None:
        raise SegcpError("--split is for --task; a data directory is used whole")
    from segcp.io.datadir import data_inputs
    from segcp.io import check_output

    check_output(out, [*model, *(data_inputs(data) if data is not None else [])])
    man = infer_to_dir(
        [str(m) for m in model], out, task=task, split=split, data=data, samples=samples, seed=seed,
        batch_size=batch, threads=threads, device=device, overwrite=overwrite, show_progress=not quiet, slice_axis=slice_axis,
    )
    if not quiet:
        d = man["dice"]
        what = "probability volumes" if man.get("volumes") else "probability maps"
        msg = f"wrote {len(man['ids'])} {what}" + (f" and {samples} samples each" if samples else "") + f" to {out}"
        if d and d.get("mean") is not None:
            parts = [f"Dice {d['mean']:.4f} (n = {d['n']})"]
            if d.get("test") is not None:
                parts.append(f"test {d['test']:.4f} (n = {d['n_test']})")
            msg += "; " + ", ".join(parts)
        typer.echo(msg)


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that temporaries are removed on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _one_line(text: str) -> str:
    """One printable line: whitespace collapsed, control characters (terminal escapes) shown escaped."""
    flat = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and exit status 2 on bad input.

    Bad input (:class:`SegcpError`), a bad option (click's usage errors) and an operating-system
    error (a file that cannot be read or written) all end with one line on stderr,
    ``segcp: error: …``, and exit status 2; Ctrl-C exits 130 and SIGTERM 143, in every case
    after the temporaries of the run were removed.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = app(args=argv, prog_name="segcp", standalone_mode=False)
    except SegcpError as exc:
        sys.stderr.write(f"segcp: error: {_one_line(str(exc))}\n")
        sys.exit(2)
    except OSError as exc:  # a file the checks could not foresee (permissions, disk full…)
        where = exc.filename if exc.filename is not None else "segcp"
        sys.stderr.write(f"segcp: error: {_one_line(str(where))}: {_one_line(exc.strerror or type(exc).__name__)}\n")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("segcp: interrupted\n")
        sys.exit(130)
    except Terminated:
        sys.stderr.write("segcp: terminated\n")
        sys.exit(143)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `segcp` alone: the help, as usual
            sys.stdout.write(exc.format_message() + "\n")
            sys.exit(0)
        # click's usage errors (unknown option, missing or malformed value): one line, not a usage block
        sys.stderr.write(f"segcp: error: {_one_line(exc.format_message())} (see segcp --help)\n")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
