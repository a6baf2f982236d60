"""The benchmark's figures (matplotlib, Agg) from plain data, each as PNG bytes; distance axes in the data's units."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ablation_figure",
    "band_figure",
    "dice_curve_figure",
    "diversity_figure",
    "draws_figure",
    "monitor_figure",
    "overlay_figure",
    "set_size_figure",
    "summary_figure",
    "validity_figure",
    "volume_figure",
]

COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7})
    return plt


def _finish_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, dpi: int) -> bytes:
    """Label, grid and legend one line chart, then render it (PNG bytes)."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig, dpi)


def _png(fig: Any, dpi: int, title: str | None = None, top: float = 1.0, **layout: Any) -> bytes:
    """Lay out (under the figure's ``title``, when given, the axes up to ``top``) and render as PNG bytes."""
    if title is not None:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, top), **layout)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return buf.getvalue()


def _bare(axes: Any) -> None:
    """No ticks on these axes (image panels)."""
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def _band(ax: Any, x: Any, y: Any, e: Any, k: int, label: str) -> None:
    """A line of means with a shaded band of ± ``e``, in the k-th colour."""
    ax.plot(x, y, marker="o", ms=3, color=_colour(k), label=label)
    ax.fill_between(x, y - e, y + e, color=_colour(k), alpha=0.12, lw=0)


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def crop_box(masks: Sequence[NDArray[Any]], shape: tuple[int, ...], margin: float = 0.35, minimum: int = 48) -> tuple[slice, slice]:
    """A square-ish box around the union of ``masks`` (with a margin), inside an image of ``shape``."""
    union = np.zeros(shape[:2], bool)
    for m in masks:
        union |= np.asarray(m, bool)
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    out = []
    for lo, hi, n in ((rows[0], rows[-1] + 1, shape[0]), (cols[0], cols[-1] + 1, shape[1])):
        size = hi - lo
        want = max(int(size * (1 + 2 * margin)), minimum)
        c = (lo + hi) / 2
        a = int(max(0, min(n - want, round(c - want / 2))))
        out.append(slice(a, min(n, a + want)))
    return out[0], out[1]


def overlay_figure(panels: Sequence[dict[str, Any]], methods: Sequence[str], diffused: Sequence[str], dpi: int, title: str) -> bytes:
    """RW-CP's Fig. 1: per image (``panels``: id, image, truth, probs, sets, maps, dice, note) the image, the
    truth, each method's set, the raw and the diffused maps."""
    plt = _plt()
    cols = 2 + len(methods) + 1 + len(diffused)
    fig, axes = plt.subplots(len(panels), cols, figsize=(1.45 * cols, 1.75 * len(panels) + 0.35), squeeze=False)
    for r, p in enumerate(panels):
        img = p.get("image")
        shown = _gray(img if img is not None else p["probs"])
        box = crop_box([p["truth"], p["probs"] >= 0.5, *p["sets"].values()], p["truth"].shape)
        truth = p["truth"][box]
        view = shown[box] if shown.shape[:2] == p["truth"].shape else shown
        ax = axes[r, 0]
        ax.imshow(view, cmap="gray")
        ax.set_title(f"{p['id']}" + (f"\n{p['note']}" if p.get("note") else ""), fontsize=6)
        ax = axes[r, 1]
        ax.imshow(view, cmap="gray")
        ax.imshow(np.ma.masked_where(~truth, truth), cmap="autumn", alpha=0.55, vmin=0, vmax=1)
        ax.set_title("truth", fontsize=7)
        for j, m in enumerate(methods):
            ax = axes[r, 2 + j]
            ax.imshow(view, cmap="gray")
            s = p["sets"][m][box]
            ax.imshow(np.ma.masked_where(~s, s), cmap="winter", alpha=0.5, vmin=0, vmax=1)
            if truth.any():
                ax.contour(truth, levels=[0.5], colors="yellow", linewidths=0.6)
            d = p.get("dice", {}).get(m)
            ax.set_title(f"{m}" + (f"\nDice {d:.2f}" if d is not None and math.isfinite(d) else ""), fontsize=6)
        ax = axes[r, 2 + len(methods)]
        ax.imshow(p["probs"][box], cmap="magma", vmin=0, vmax=1)
        ax.set_title("raw probability", fontsize=7)
        for j, lab in enumerate(diffused):
            ax = axes[r, 3 + len(methods) + j]
            ax.imshow(p["maps"][lab][box], cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"diffused ({lab})", fontsize=6)
        _bare(axes[r])
    return _png(fig, dpi, title, 0.97, h_pad=0.6)


def _gray(shown: NDArray[Any]) -> NDArray[Any]:
    """A colour image (H, W, 3) or (3, H, W) as its mean over the channels; a gray one as is."""
    if shown.ndim == 3:
        shown = shown if shown.shape[-1] in (3, 4) else np.moveaxis(shown, 0, -1)
        return shown.mean(axis=-1)
    return shown


def band_figure(panels: Sequence[dict[str, Any]], methods: Sequence[str], dpi: int, title: str) -> bytes:
    """Two-sided sets on the image: per panel (id, image, truth, bands: method → (inner, outer), width, note;
    2D arrays) the image with the truth, then per method the certain region I (green, solid contour) and the
    possible region O \\ I (orange, dashed contour of O), the truth's contour in yellow."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    certain, possible_c = ListedColormap(["#1b9e77"]), ListedColormap(["#d95f02"])
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(panels), cols, figsize=(1.75 * cols, 2.05 * len(panels) + 0.4), squeeze=False)
    for r, p in enumerate(panels):
        truth = np.asarray(p["truth"], bool)
        box = crop_box([truth, *(o for _, o in p["bands"].values())], truth.shape)
        img = p.get("image")
        shown = _gray(np.asarray(img if img is not None else p["probs"], dtype=float))
        view = shown[box] if shown.shape[:2] == truth.shape else shown
        ax = axes[r, 0]
        ax.imshow(view, cmap="gray")
        if truth[box].any():
            ax.contour(truth[box], levels=[0.5], colors="yellow", linewidths=0.7)
        ax.set_title(f"{p['id']}" + (f"\n{p['note']}" if p.get("note") else ""), fontsize=6)
        for j, m in enumerate(methods):
            ax = axes[r, 1 + j]
            inner, outer = (np.asarray(x, bool)[box] for x in p["bands"][m])
            ax.imshow(view, cmap="gray")
            possible = outer & ~inner
            ax.imshow(np.ma.masked_where(~possible, possible), cmap=possible_c, alpha=0.45)
            ax.imshow(np.ma.masked_where(~inner, inner), cmap=certain, alpha=0.55)
            if inner.any():
                ax.contour(inner, levels=[0.5], colors="#1b9e77", linewidths=0.8)
            if outer.any() and not outer.all():
                ax.contour(outer, levels=[0.5], colors="#d95f02", linewidths=0.8, linestyles="dashed")
            if truth[box].any():
                ax.contour(truth[box], levels=[0.5], colors="yellow", linewidths=0.5)
            w = p.get("width", {}).get(m)
            ax.set_title(f"{m}" + (f"\nwidth {w:.2f}" if w is not None and math.isfinite(w) else ""), fontsize=6)
        _bare(axes[r])
    return _png(fig, dpi, title, 0.95, h_pad=1.0)


def volume_figure(
    truth: Sequence[float], reference: Sequence[Sequence[float]], intervals: dict[str, Sequence[Sequence[float]]], unit: str, dpi: int, title: str
) -> bytes:
    """The true volume of each test image (black dots, sorted) against its intervals: one panel per entry of
    ``intervals`` (name → [lower, upper] per image, in the order of ``truth``), each beside the ``reference``
    interval (the direct one, gray); log axis shared by the panels, lower ends at 0 drawn at its bottom."""
    plt = _plt()
    order = np.argsort(np.asarray(truth, dtype=float), kind="stable")
    y = np.asarray(truth, dtype=float)[order]
    x = np.arange(len(y))
    bars = {"direct": np.asarray(reference, dtype=float).reshape(-1, 2)[order]}
    bars |= {name: np.asarray(iv, dtype=float).reshape(-1, 2)[order] for name, iv in intervals.items()}
    positive = np.concatenate([y[y > 0], *(b[b > 0] for b in bars.values())])
    floor = 0.5 * float(positive.min()) if positive.size else 1.0
    n = max(len(intervals), 1)
    fig, axes = plt.subplots(n, 1, figsize=(max(4.5, min(9.0, 0.1 * len(y) + 3.0)), 1.5 * n + 0.6), sharex=True, sharey=True, squeeze=False)
    for k, name in enumerate(intervals or {"direct": reference}):
        ax = axes[k, 0]
        for j, (label, b) in enumerate((("direct", bars["direct"]), (name, bars[name])) if name != "direct" else (("direct", bars["direct"]),)):
            lo, hi = np.maximum(b[:, 0], floor), np.maximum(b[:, 1], floor)
            ax.vlines(x + (j - 0.5) * 0.3, lo, hi, color="#999999" if label == "direct" else _colour(k), lw=1.8, label=label)
        ax.plot(x, np.maximum(y, floor), "k.", ms=4, label="true volume")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_ylabel(f"volume ({unit})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left", fontsize=6)
    axes[-1, 0].set_xlabel("test image (sorted by true volume)")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    return _png(fig, dpi, title, 0.95)


def dice_curve_figure(curves: dict[str, list[tuple[float, float, float]]], dpi: int, title: str) -> bytes:
    """RW-CP's Fig. 2: mean Dice (± std over splits) against 1 − α. ``curves``: method → [(α, mean, std)]."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for k, (m, pts) in enumerate(curves.items()):
        pts = sorted(pts, key=lambda t: -t[0])
        x = np.array([1 - a for a, _, _ in pts])
        y = np.array([v for _, v, _ in pts])
        _band(ax, x, y, np.array([0.0 if not math.isfinite(s) else s for _, _, s in pts]), k, m)
    return _finish_plot(fig, ax, "1 − α (target coverage)", "mean Dice of the sets", title, dpi)


def summary_figure(summary: Sequence[dict[str, Any]], alphas: Sequence[float], dpi: int = 110) -> bytes:
    """compare's summary.png: Dice, HD95, stretch and test FNR (± std) of the summary rows against α."""
    plt = _plt()
    panels = [("dice", "Dice (set vs truth)"), ("hd95", "HD95"), ("stretch", "stretch |C|/|Ŷ|"), ("fnr", "test FNR")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for k, mth in enumerate(dict.fromkeys(r["method"] for r in summary)):
            rows = sorted((r for r in summary if r["method"] == mth), key=lambda r: r["alpha"])
            x, y, err = [r["alpha"] for r in rows], [r[key] for r in rows], [r.get(f"{key}_std", 0.0) for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=_colour(k), label=mth)
        if key == "fnr":
            xs = np.sort(np.asarray(alphas, dtype=float))
            ax.plot(xs, xs, "k--", lw=1, label="α")
        ax.set_xlabel("α")
        ax.set_title(title, fontsize=10)
    if axes[0].get_legend_handles_labels()[0]:  # no one-sided row (only two-sided ones): nothing to name
        axes[0].legend(fontsize=8)
    return _png(fig, dpi)


def set_size_figure(
    curves: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]], marks: dict[str, list[tuple[float, float]]], dpi: int, title: str
) -> bytes:
    """|C_λ| / |Ŷ| against λ for one image (``curves``: method → (λ, ratio); ``marks``: method → [(α, λ̂)])."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
    for k, (m, (lam, size)) in enumerate(curves.items()):
        y = np.where(size > 0, size, np.nan)
        axes[0].plot(lam, y, color=_colour(k), label=m, lw=1.2)
        p = 1.0 - lam
        keep = p > 0
        axes[1].plot(p[keep], y[keep], color=_colour(k), label=m, lw=1.2)
        for _, lh in marks.get(m, []):
            axes[0].axvline(lh, color=_colour(k), ls=":", lw=0.8)
            if lh < 1:
                axes[1].axvline(1 - lh, color=_colour(k), ls=":", lw=0.8)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("|C_λ| / |model mask|")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_xlabel("λ (C_λ = {score ≤ λ}, score = 1 − probability)")
    axes[0].set_title(title)
    axes[1].set_xscale("log")
    axes[1].invert_xaxis()
    axes[1].set_xlabel("1 − λ (the probability level), log scale")
    axes[1].set_title("near λ = 1; dotted: λ̂ of split 0 at each α")
    axes[0].legend()
    return _png(fig, dpi)


def validity_figure(rows: dict[str, list[tuple[float, float, float]]], dpi: int, title: str) -> bytes:
    """Mean test FNR (± 3 SE) against α, with the line FNR = α. ``rows``: method → [(α, fnr, se)]."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    alphas: list[float] = []
    for k, (m, pts) in enumerate(rows.items()):
        pts = sorted(pts)
        x = np.array([a for a, _, _ in pts]) * (1 + 0.02 * (k - len(rows) / 2))
        err = [3 * (s if math.isfinite(s) else 0) for _, _, s in pts]
        ax.errorbar(x, [f for _, f, _ in pts], yerr=err, marker="o", ms=3, capsize=2, color=_colour(k), label=m, lw=0.8)
        alphas += [a for a, _, _ in pts]
    if alphas:
        xs = np.linspace(0, max(alphas) * 1.1, 10)
        ax.plot(xs, xs, "k--", lw=0.8, label="FNR = α")
    return _finish_plot(fig, ax, "α", "mean test FNR (± 3 SE)", title, dpi)


def ablation_figure(param: str, values: Sequence[Any], stats: dict[str, list[float]], units: str, dpi: int, title: str) -> bytes:
    """An ablated parameter (RW-CP's Fig. 3 for k): Dice, HD95 (``stats``: with ``_std``) and ``seconds`` per value."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(7.6, 2.5))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values))
    for ax, key, label in ((axes[0], "dice", "mean Dice"), (axes[1], "hd95", f"HD95 ({units})"), (axes[2], "seconds", "score map, CPU s / image")):
        y = np.asarray(stats[key], dtype=float)
        err = np.asarray(stats.get(f"{key}_std", [0.0] * len(values)), dtype=float)
        ax.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", ms=3, capsize=2, color=_colour(0 if key != "seconds" else 2), lw=1)
        ax.set_xlabel(param)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if not numeric:
            ax.set_xticks(x, [str(v) for v in values])
    return _png(fig, dpi, title, 0.93)


def diversity_figure(curves: dict[str, dict[str, list[tuple[int, float, float]]]], dpi: int, title: str) -> bytes:
    """CONSIGN's Figs. 2–4: Chao1, SEC and |correlation| against draws S (``curves``: method → metric → [(S, m, s)])."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(7.8, 2.6))
    names = (("chao", "Chao1 (distinct segmentations)"), ("sec", "SEC (truth among the draws)"), ("correlation", "mean |correlation| of draws"))
    for ax, (key, label) in zip(axes, names, strict=True):
        for k, (m, mets) in enumerate(curves.items()):
            pts = sorted(mets.get(key, []))
            if not pts:
                continue
            _band(ax, np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), np.nan_to_num(np.array([p[2] for p in pts])), k, m)
        ax.set_xscale("log")
        sizes = sorted({p[0] for mets in curves.values() for p in mets.get(key, [])})
        if sizes:
            ax.set_xticks(sizes, [str(v) for v in sizes])
            ax.minorticks_off()
        if key == "chao":
            ax.set_yscale("log")
        ax.set_xlabel("number of draws S")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    return _png(fig, dpi, title, 0.92)


def draws_figure(
    image: NDArray[Any] | None, truth: NDArray[Any], mean_argmax: NDArray[Any], draws: dict[str, NDArray[Any]], n_labels: int, dpi: int, title: str
) -> bytes:
    """CONSIGN's Fig. 5: a row of segmentations drawn from each calibrated set (one image)."""
    plt = _plt()
    n = max(d.shape[0] for d in draws.values())
    cols = 2 + (image is not None) + n
    fig, axes = plt.subplots(len(draws), cols, figsize=(1.3 * cols, 1.4 * len(draws) + 0.3), squeeze=False)
    cmap = plt.get_cmap("tab10", max(n_labels, 2))

    def labels(ax: Any, a: Any) -> None:
        ax.imshow(a, cmap=cmap, vmin=-0.5, vmax=max(n_labels, 2) - 0.5, interpolation="nearest")

    fg = [truth > 0, mean_argmax > 0]  # the structure, not the scattered pixels some draws add
    box = crop_box(fg, truth.shape, margin=0.6, minimum=64)
    truth, mean_argmax = truth[box], mean_argmax[box]
    draws = {m: d[(slice(None), *box)] for m, d in draws.items()}
    if image is not None and image.shape[:2] == fg[0].shape:
        image = image[box]
    for r, (m, d) in enumerate(draws.items()):
        c = 0
        if image is not None:
            axes[r, c].imshow(image, cmap="gray")
            axes[r, c].set_title("image", fontsize=6)
            c += 1
        labels(axes[r, c], truth)
        axes[r, c].set_title("truth", fontsize=6)
        labels(axes[r, c + 1], mean_argmax)
        axes[r, c + 1].set_title("argmax of mean", fontsize=6)
        for j in range(n):
            if j < d.shape[0]:
                labels(axes[r, c + 2 + j], d[j])
            axes[r, c + 2 + j].set_title(f"{m}: draw {j + 1}" if j == 0 else f"draw {j + 1}", fontsize=6)
        _bare(axes[r])
    return _png(fig, dpi, title, 0.95)


def monitor_figure(result: dict[str, Any], dpi: int = 110) -> bytes:
    """``segcp monitor``'s figure (``result``: :func:`segcp.jobs.risk.monitor_dir`'s): with labels, each
    loss's running mean at λ̂ with its time-uniform bounds against α, and the martingale's wealth
    (log scale) against 1/level; always the two-sample p-values against the level."""
    plt = _plt()
    labelled = bool(result.get("labels"))
    panels = 3 if labelled else 1
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 2.8), squeeze=False)
    axes = axes[0]
    if labelled:
        ax = axes[0]
        for k, r in enumerate(result["risk"]):
            t = np.arange(1, len(r["mean"]) + 1)
            ax.plot(t, r["mean"], color=_colour(k), lw=1, label=f"{r['loss']} (mean)")
            ax.fill_between(t, r["lower"], r["upper"], color=_colour(k), alpha=0.15, lw=0)
            ax.axhline(r["alpha"], color=_colour(k), ls="--", lw=0.8)
        ax.set(xlabel="new cases", ylabel="loss at λ̂ (time-uniform bounds)", title="risk", ylim=(0, None))
        ax.legend()
        ax = axes[1]
        w = np.asarray(result["martingale"]["wealth"], dtype=float)
        ax.semilogy(np.arange(1, w.size + 1), w, color=_colour(0), lw=1)
        ax.axhline(1.0 / result["level"], color="k", ls="--", lw=0.8, label=f"1/level = {1 / result['level']:g}")
        ax.set(xlabel="new cases", ylabel="martingale wealth", title="exchangeability")
        ax.legend()
    ax = axes[-1]
    two = result["two_sample"]
    ax.bar(range(len(two["statistics"])), two["pvalues"], color=[_colour(1) if r else _colour(0) for r in two["rejected"]])
    ax.axhline(result["level"], color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(two["statistics"])), two["statistics"], rotation=30, ha="right")
    ax.set(ylabel="two-sample p-value", title="set statistics (no labels)")
    return _png(fig, dpi, title=f"{result['verdict'].split(':')[0]} after {result['n_new']} new cases", top=0.9)
