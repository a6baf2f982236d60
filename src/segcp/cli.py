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


def _parse_spec(text: str) -> Any:
    """``NAME[:KEY=VALUE,...][@LABEL]`` → MethodSpec (``guarantee``/``tau`` keys set the guarantee)."""
    from segcp.compare import MethodSpec

    label = None
    if "@" in text:
        text, label = text.split("@", 1)
    name, _, rest = text.partition(":")
    params = _parse_params([kv for kv in rest.split(",") if kv]) if rest else {}
    guarantee = str(params.pop("guarantee", "fnr"))
    tau = float(params.pop("tau", 1.0))
    if label is None:
        label = name + (" (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    return MethodSpec(label, name.strip(), params, guarantee, tau)


@app.command()
def compare(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, report.md and summary.png.")],
    method: Annotated[
        Optional[list[str]],
        typer.Option("--method", "-m", help="NAME[:KEY=VALUE,...][@LABEL], repeatable; the first is the baseline."),
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
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for results JSON and report.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of synthetic images (half calibration, half test).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the phantoms and the split.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole job on built-in SYNTHETIC phantoms (no data needed)."""
    from segcp.demo import run_demo

    run_demo(out=out, n=n, seed=seed, show_progress=not quiet)


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
