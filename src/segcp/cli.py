"""The ``segcp`` command line: calibrate, predict, evaluate, demo.

Every bad input ends with one line on stderr, ``segcp: error: <file or option>: <problem>``,
and exit status 2; result files are written atomically, so nothing partial is left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segcp import __version__
from segcp.errors import SegcpError

app = typer.Typer(
    name="segcp",
    help="Conformal prediction sets with finite-sample guarantees for medical image segmentation.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs → dict, VALUE parsed as int, float, bool or string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SegcpError(f"--param {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        value: Any = raw
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[key.strip().replace("-", "_")] = value
    return out


DataOpt = Annotated[Path, typer.Option("--data", help="Data directory with probs/, masks/ (and images/).")]
LabelOpt = Annotated[
    Optional[int], typer.Option("--label", help="Structure label L: mask == L (and channel L of class-probability stacks).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]


@app.command()
def calibrate(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Where to write the calibration JSON.")],
    alpha: Annotated[float, typer.Option("--alpha", help="Risk level in (0, 1).")] = 0.1,
    method: Annotated[str, typer.Option("--method", help="Set method (see `segcp methods`).")] = "threshold",
    label: LabelOpt = None,
    guarantee: Annotated[
        str,
        typer.Option("--guarantee", help="fnr: E[FNR] <= alpha (risk control); quantile: P(coverage >= tau) >= 1 - alpha."),
    ] = "fnr",
    tau: Annotated[float, typer.Option("--tau", help="Coverage ratio for --guarantee quantile.")] = 1.0,
    se: Annotated[
        Optional[str], typer.Option("--se", help="morph: structuring element cross|square|ball.")
    ] = None,
    encoder: Annotated[
        Optional[str],
        typer.Option("--encoder", help="rwcp: image encoder dinov2-small|fallback|<checkpoint directory>."),
    ] = None,
    k: Annotated[Optional[int], typer.Option("--k", help="rwcp: neighbours per node of the kNN graph.")] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", help="rwcp: edge weight exp(-beta * distance); consign/aps: agreement threshold (mean per-label recall > beta).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="rwcp: random-walk diffusion steps.")] = None,
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="Method hyper-parameter KEY=VALUE (repeatable).")
    ] = None,
    K: Annotated[Optional[int], typer.Option("--K", help="consign: number of principal components (e.g. 2 or 5).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Calibrate a method on a labelled data directory and write calib.json."""
    from segcp.pipeline import calibrate_dir

    params = _parse_params(param)
    if se is not None:
        params["se"] = se
    if K is not None:
        params["K"] = K
    for key, value in (("encoder", encoder), ("k", k), ("beta", beta), ("steps", steps)):
        if value is not None:
            params[key] = value

    record = calibrate_dir(
        data,
        method=method,
        alpha=alpha,
        label=label,
        guarantee=guarantee,
        tau=tau,
        method_params=params,
        out=out,
        show_progress=not quiet,
    )
    if not quiet:
        typer.echo(
            f"{record['method']}: lambda = {record['lambda']:.6g} from n = {record['n']} images "
            f"({record['statement']}) -> {out}"
        )


@app.command()
def predict(
    calib: Annotated[Path, typer.Option("--calib", help="calib.json written by `segcp calibrate`.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sets, one <id>.npy (bool) per image.")],
    quiet: QuietOpt = False,
) -> None:
    """Write the calibrated prediction set of every image in a data directory."""
    from segcp.pipeline import predict_dir

    written = predict_dir(calib, data, out, show_progress=not quiet)
    if not quiet:
        typer.echo(f"wrote {len(written)} sets to {out}")


@app.command()
def evaluate(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Where to write metrics JSON.")],
    sets: Annotated[
        Optional[Path], typer.Option("--sets", help="Folder of <id>.npy sets (from `segcp predict`).")
    ] = None,
    label: LabelOpt = None,
    calib: Annotated[
        Optional[Path], typer.Option("--calib", help="consign/aps: calib.json; draws segmentations from the calibrated sets.")
    ] = None,
    draws: Annotated[int, typer.Option("--draws", help="consign/aps: segmentations drawn per image.")] = 100,
    quiet: QuietOpt = False,
) -> None:
    """Coverage, FNR, stretch, Dice, HD95 and ASSD of sets against the masks (or, with
    --calib, coverage, SEC, Chao1 and correlation of segmentations drawn from consign/aps sets)."""
    from segcp.pipeline import evaluate_dir
    from segcp.report import metrics_table

    result = evaluate_dir(sets, data, label=label, out=out, show_progress=not quiet, calib=calib, draws=draws)
    if calib is not None:
        if not quiet:
            m = result["mean"]
            typer.echo(
                f"{result['method']} (lambda = {result['lambda']:.6g}), {result['n']} images, {draws} draws each: "
                f"coverage {m['covered']:.3f}, SEC {m['sec']:.3f}, Chao1 {m['chao']:.4g}, "
                f"|correlation| {m['correlation']:.3f} -> {out}"
            )
        return
    if not quiet:
        metrics_table({"sets": result}, title=f"{result['n']} images, distances in {result['distance_units']}")


@app.command()
def methods() -> None:
    """List the available set methods."""
    from segcp.methods import available_methods

    for name in available_methods():
        typer.echo(name)
    typer.echo("consign  (sets of segmentations from samples/; segcp.multiclass)")
    typer.echo("aps      (pixel-wise APS on the mean softmax, same 0/1 loss; segcp.multiclass)")


def _grid_values(key: str, raw: str) -> tuple[str, list[Any]]:
    """``KEY``, ``V1|V2|...`` → (normalised key, parsed values)."""
    return key.strip().replace("-", "_"), [_parse_params([f"v={v}"])["v"] for v in raw.split("|")]


def _grid_candidates(name: str, params: dict[str, Any], grid: dict[str, list[Any]]) -> list[Any]:
    """One MethodSpec per combination of ``grid`` on top of ``params`` (``guarantee``/``tau`` keys
    set the guarantee; the label names the grid values)."""
    from segcp.compare import MethodSpec
    from segcp.tuning import expand_grid

    params = dict(params)
    guarantee = str(params.pop("guarantee", "fnr"))
    tau = float(params.pop("tau", 1.0))
    return [MethodSpec(", ".join(f"{k}={p[k]}" for k in grid), name, p, guarantee, tau) for p in expand_grid(params, grid)]


def _parse_spec(text: str) -> Any:
    """``NAME[:KEY=VALUE,...][@LABEL]`` → MethodSpec (``guarantee``/``tau`` keys set the guarantee).

    A value ``V1|V2|...`` makes a tuned row (:class:`segcp.tuning.TunedSpec`): every combination
    of the ``|`` values is a candidate, chosen per split by cross-validation on the calibration
    images (``criterion=dice|hd95|stretch``, ``folds=K`` set how).
    """
    from segcp.compare import MethodSpec
    from segcp.tuning import TunedSpec

    label = None
    if "@" in text:
        text, label = text.split("@", 1)
    name, _, rest = text.partition(":")
    name = name.strip()
    pairs = [kv for kv in rest.split(",") if kv] if rest else []
    grid = {}
    fixed = []
    for kv in pairs:
        key, eq, raw = kv.partition("=")
        if eq and "|" in raw:
            k, values = _grid_values(key, raw)
            grid[k] = values
        else:
            fixed.append(kv)
    params = _parse_params(fixed)
    criterion = str(params.pop("criterion", "dice"))
    folds = int(params.pop("folds", 5))
    if not grid:
        guarantee = str(params.pop("guarantee", "fnr"))
        tau = float(params.pop("tau", 1.0))
        if label is None:
            label = name + (" (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
        return MethodSpec(label, name, params, guarantee, tau)
    cands = tuple(_grid_candidates(name, params, grid))
    if label is None:
        label = f"{name} (tuned: " + ", ".join(grid) + ")"
    return TunedSpec(label, cands, criterion=criterion, folds=folds)


@app.command()
def compare(
    data: DataOpt,
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
    quiet: QuietOpt = False,
) -> None:
    """Compare methods over repeated calibration/test splits of a labelled data directory.

    Groups (patients) come from segcp_export.json or groups.json in DIR; without them every
    image is its own group.
    """
    from segcp.compare import compare_dir, markdown_summary

    specs = [_parse_spec(m) for m in (method or ["threshold", "morph:se=cross"])]
    result = compare_dir(
        data,
        specs,
        label=label,
        alphas=alpha or [0.2, 0.1, 0.05],
        n_cal=n_cal,
        n_splits=splits,
        seed=seed,
        out=out,
        title=title,
        show_progress=not quiet,
    )
    if not quiet:
        typer.echo(markdown_summary(result))
        typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'summary.png'}")


@app.command()
def tune(
    data: DataOpt,
    method: Annotated[str, typer.Option("--method", "-m", help="Set method to tune (see `segcp methods`).")],
    grid: Annotated[
        list[str], typer.Option("--grid", "-g", help="KEY=V1|V2|... values to try (repeatable; the product is searched).")
    ],
    alpha: Annotated[float, typer.Option("--alpha", help="Risk level the sets are calibrated at inside each fold.")] = 0.1,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Fixed KEY=VALUE method parameters.")] = None,
    criterion: Annotated[str, typer.Option("--criterion", help="dice (max), hd95 or stretch (min) of the held-out folds' sets.")] = "dice",
    folds: Annotated[int, typer.Option("--folds", help="Group K-fold cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 0,
    label: LabelOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the CV table and the best params as JSON.")] = None,
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
    from segcp.tuning import tune as run_tune

    values: dict[str, list[Any]] = {}
    for g in grid:
        key, eq, raw = g.partition("=")
        if not eq or not raw:
            raise SegcpError(f"--grid {g!r}: expected KEY=V1|V2|...")
        k, vals = _grid_values(key, raw)
        values[k] = vals
    cands = _grid_candidates(method, _parse_params(param), values)
    cases, groups, source = load_labelled_dir(data, cands, label=label, show_progress=not quiet)
    ids = [c.id for c in cases]
    res = run_tune(cases, groups, cands, alpha, criterion=criterion, folds=folds, seed=seed, show_progress=not quiet)
    record = res.to_dict() | {"data": str(data), "groups_from": source, "n_images": len(ids), "n_groups": len(set(groups))}
    if out is not None:
        write_json(out, record)
    if not quiet:
        typer.echo(f"{len(ids)} images in {len(set(groups))} groups ({source}); {folds}-fold CV at alpha={alpha:g}, criterion {criterion}")
        for row in res.table:
            mark = "*" if row["candidate"] == res.best_index else " "
            extra = f"  ({row['infeasible_folds']} infeasible folds)" if row["infeasible_folds"] else ""
            typer.echo(f"{mark} {row['label']:<40} {criterion} {row['value']:.4f}{extra}")
        typer.echo("best: " + " ".join(f"--param {k}={v}" for k, v in res.best.params.items()))
        if out is not None:
            typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for results JSON and report.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of synthetic images (half calibration, half test).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the phantoms and the split.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole job on built-in SYNTHETIC phantoms (no data needed)."""
    from segcp.demo import run_demo

    run_demo(out=out, n=n, seed=seed, show_progress=not quiet)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Where to write the model checkpoint (.pt).")],
    task: Annotated[
        Optional[str], typer.Option("--task", help="Task to train on (acdc-lv, acdc-rv, acdc, busi): its training patients.")
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Or: a data directory with images/ and masks/ (all of it is training data; pre-split by patient)."),
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
    quiet: QuietOpt = False,
) -> None:
    """Train a UNet on a task's training patients or on a data directory."""
    from segcp.models import require_torch

    require_torch()
    from segcp.models.train import TrainConfig, train_datadir, train_task

    if (task is None) == (data is None):
        raise SegcpError("train needs either --task T or --data DIR (not both)")
    if task is not None and label is not None:
        raise SegcpError("--label is for --data; a task defines its own target")
    cfg = TrainConfig.from_preset(
        preset, epochs=epochs, steps=steps, size=size, width=width, batch_size=batch, dropout=dropout, dropout_from_level=dropout_levels, seed=seed,
        threads=threads, max_minutes=max_minutes, augment=augment, val_fraction=val_fraction, device=device,
    )
    if task is not None:
        meta = train_task(task, out, cfg, split_seed=split_seed, show_progress=not quiet)
    else:
        meta = train_datadir(data, out, cfg, label=label, show_progress=not quiet)  # type: ignore[arg-type]
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
    quiet: QuietOpt = False,
) -> None:
    """Probability maps (and samples) of one model or an ensemble, on the original image grid."""
    from segcp.models import require_torch

    require_torch()
    from segcp.models.infer import infer_to_dir

    if (task is None) == (data is None):
        raise SegcpError("infer needs either --task T --split PART or --data DIR (not both)")
    if task is not None and split is None:
        raise SegcpError("--task needs --split calibration|test|pool")
    if data is not None and split is not None:
        raise SegcpError("--split is for --task; a data directory is used whole")
    man = infer_to_dir(
        [str(m) for m in model], out, task=task, split=split, data=data, samples=samples, seed=seed,
        batch_size=batch, threads=threads, device=device, overwrite=overwrite, show_progress=not quiet,
    )
    if not quiet:
        d = man["dice"]
        msg = f"wrote {len(man['ids'])} probability maps" + (f" and {samples} samples each" if samples else "") + f" to {out}"
        if d and d.get("mean") is not None:
            parts = [f"Dice {d['mean']:.4f} (n = {d['n']})"]
            if d.get("test") is not None:
                parts.append(f"test {d['test']:.4f} (n = {d['n_test']})")
            msg += "; " + ", ".join(parts)
        typer.echo(msg)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and exit status 2 on bad input."""
    try:
        app(args=argv, prog_name="segcp")
    except SegcpError as exc:
        sys.stderr.write(f"segcp: error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("segcp: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
