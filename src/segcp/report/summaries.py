"""Summaries of split records over splits: mean ± std, the guarantee check, and win rates — one
meaning everywhere: the fraction of splits in which a row's Dice is higher (HD95 lower) than the
**baseline row**'s at the same α (a plan choice: the config's ``baseline``, compare's first ``-m``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segcp.engine.measure import EXTRAS, exceedance
from segcp.metrics import METRICS, mean_se, mean_std

__all__ = ["exceedance_ok", "model_summary", "risk_summary", "summarize"]


def exceedance_ok(fraction: float, delta: float, splits: int) -> bool:
    """Learn then Test's check over splits: the fraction of splits whose test risk exceeds α is at most
    δ + 3·SE, SE = √(δ(1 − δ)/splits) (docs/ltt.md, "Statistical results")."""
    return bool(fraction <= delta + 3 * math.sqrt(delta * (1 - delta) / splits))


def risk_summary(rows: Sequence[dict[str, Any]], alpha: float, loss: str, delta: float | None, splits: int) -> dict[str, Any]:
    """A controlled-loss row's summary over its feasible splits ``rows`` (of ``splits``): ``controlled`` (the loss), ``delta``, the test
    risk's mean ± std and SE, ``risk_exceeds`` (the fraction of all splits whose test risk exceeds α, :func:`exceedance`)
    and ``risk_valid``: with δ (Learn then Test) that fraction ≤ δ + 3 SE(δ), without (CRC) the mean test risk ≤ α + 3 SE."""
    out: dict[str, Any] = {"controlled": loss, "delta": delta}
    out["risk"], out["risk_std"] = mean_std([r.get("risk") for r in rows])
    out["risk_se"] = mean_se([r.get("risk") for r in rows])[1]
    out["risk_exceeds"] = exceedance([r.get("risk_exceeds", math.nan) for r in rows], splits)
    if delta is not None and rows:
        out["risk_valid"] = exceedance_ok(out["risk_exceeds"], float(delta), splits)
    else:
        out["risk_valid"] = bool(out["risk"] <= alpha + 3 * out["risk_se"]) if np.isfinite(out.get("risk_se", math.nan)) else None
    return out


def summarize(
    records: Sequence[dict[str, Any]], baseline: str | None = None, metrics: Sequence[str] = (*METRICS, *EXTRAS), risk: str = "fnr"
) -> list[dict[str, Any]]:
    """Mean ± std over splits per (row, α) of λ̂ and ``metrics``, the SE of the mean test ``risk`` (``<risk>_se``)
    and ``valid`` (risk ≤ α + 3 SE), ``infeasible`` splits (left out of the means), and wins against
    ``baseline``. Two-sided rows: ``metrics`` :data:`segcp.engine.band.BAND_SPLIT`, ``risk`` ``risk`` (their guarantee's test risk). A
    controlled-loss row (records naming ``controlled``) also gets its :func:`risk_summary` (and ``valid`` only
    for loss=fnr)."""
    out = []
    order = list(dict.fromkeys(r["method"] for r in records))
    keys = sorted({(r["method"], r["alpha"]) for r in records}, key=lambda k: (order.index(k[0]), -k[1]))
    for method, alpha in keys:
        rows = sorted((r for r in records if r["method"] == method and r["alpha"] == alpha), key=lambda r: r["split"])
        row: dict[str, Any] = {"method": method, "alpha": alpha, "splits": len(rows)}
        row["infeasible"] = sum("infeasible" in r for r in rows)
        chosen = [r["chosen"] for r in rows if "chosen" in r]
        if chosen:
            row["chosen"] = {c: chosen.count(c) for c in dict.fromkeys(chosen)}
        every, rows = rows, [r for r in rows if "infeasible" not in r]
        for m in ["lambda", *metrics]:
            row[m], row[f"{m}_std"] = mean_std([r.get(m) for r in rows])
        row[f"{risk}_se"] = mean_se([r.get(risk) for r in rows])[1]
        row["valid"] = bool(row[risk] <= alpha + 3 * row[f"{risk}_se"]) if np.isfinite(row[f"{risk}_se"]) else None
        if every and "controlled" in every[0]:
            row |= risk_summary(rows, alpha, every[0]["controlled"], every[0].get("delta"), len(every))
            row["valid"] = row["valid"] if row["controlled"] == "fnr" else None  # E[FNR] ≤ α is not this row's guarantee
        if baseline is not None and method != baseline:
            base = {r["split"]: r for r in records if r["method"] == baseline and r["alpha"] == alpha}
            pairs = [(r, base[r["split"]]) for r in rows if r["split"] in base]
            if pairs:
                row["dice_win"] = float(np.mean([r.get("dice", np.nan) > b.get("dice", np.nan) for r, b in pairs]))
                row["hd95_win"] = float(np.mean([r.get("hd95", np.nan) < b.get("hd95", np.nan) for r, b in pairs]))
        out.append(row)
    return out


def model_summary(model: Sequence[dict[str, Any]], n_cal: int) -> dict[str, float]:
    """Mean ± std over splits of the base model's own row at calibration size ``n_cal``."""
    rows = [r for r in model if r["n_cal"] == n_cal]
    out: dict[str, float] = {}
    for m in (*METRICS, *EXTRAS):
        out[m], out[f"{m}_std"] = mean_std([r.get(m) for r in rows])
    return out
