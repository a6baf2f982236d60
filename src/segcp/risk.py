"""`RiskSegmenter`: any registered loss controlled on any pixel-set family, per group if asked.

The losses of :mod:`segcp.losses` (what is controlled) meet the pixel-set families of
:mod:`segcp.methods` (what the sets are) here: per case the family's score map r (C_λ = {r ≤ λ})
and the truth give each loss as an exact step function of λ, and

* one **monotone** loss without ``delta`` (``fnr``, ``quantile``, ``lesion-fnr``): exact conformal
  risk control, E[loss] ≤ α (:func:`~segcp.calibration.crc_lambda` on :meth:`Loss.curve`);
* a loss that is not monotone (``fdr``), or any loss with ``delta``: Learn then Test by
  fixed-sequence testing over every breakpoint, P(E[loss] ≤ α) ≥ 1 − δ
  (:func:`~segcp.calibration.ltt.ltt_steps`, in the loss's own direction ``order``);
* **several losses** at once (one α each; ``delta`` required), optionally over a second parameter
  of the family (``vary=("normalize", ["none", "max"])``): one fixed sequence per (configuration,
  loss) at δ/(J·K) (:func:`~segcp.calibration.ltt.ltt_chains`); the certified configuration with
  the smallest empirical value of the first loss is chosen (docs/ltt.md, "The choice").

**Per group** (``groups``: one name per calibration case — site, scanner, pathology): one λ̂ per
group, each with its own guarantee over the cases of that group (Mondrian calibration), beside
the marginal λ̂. A group with fewer cases than the guarantee needs (:meth:`RiskSegmenter.needed`:
``1/α − 1`` for CRC; for Learn then Test the n below which even losses all 0 are not certified)
is an error naming the group and the n it needs, or with ``fallback=True`` uses the marginal λ̂,
and the record says so. At prediction a case's group comes from ``case_groups`` (id → group).

Sets of segmentations (CONSIGN, APS) keep their own 0/1 ``contains`` guarantee
(:class:`~segcp.conformal.ConformalSegmenter`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves, check_alpha, crc_lambda, min_calibration_size
from segcp.calibration.crc import TOL
from segcp.calibration.ltt import PVALUES, StepLosses, check_delta, ltt_chains, ltt_steps, pvalues
from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.losses import Loss, get_loss
from segcp.methods import Prepared, SetFamily, get_method
from segcp.methods.base import MaskFamily
from segcp.record import GROUP_NAME, MAX_GROUPS

__all__ = ["GroupFit", "RiskSegmenter", "monitor_score", "read_groups"]


# ---------------------------------------------------------------------------- groups
def read_groups(spec: str, ids: Sequence[str]) -> dict[str, str]:
    """The group of each id, from ``spec``: a file (CSV/TSV ``id,group`` lines, a header
    ``id,group`` allowed; or a JSON object id → group), or ``name:REGEX`` — the group is the first
    match of REGEX in the id (its first capture group when it has one), e.g. ``name:^[a-z]+`` on
    BUSI's ``benign (12)``. Every id of ``ids`` must get a group (a one-line error naming the
    first that does not); names are 1–64 printable characters.
    """
    out: dict[str, str] = {}
    if spec.startswith("name:"):
        try:
            rx = re.compile(spec[5:])
        except re.error as exc:
            raise SegcpError(f"--groups {spec!r}: not a regular expression ({exc})") from None
        for i in ids:
            m = rx.search(i)
            if m is None:
                raise SegcpError(f"--groups {spec!r}: id {i!r} does not match, so it has no group")
            out[i] = m.group(1) if rx.groups else m.group(0)
    else:
        path = Path(spec)
        if not path.is_file():
            raise SegcpError(f"{path}: groups file not found (or give name:REGEX)")
        table: dict[str, str] = {}
        if path.suffix.lower() == ".json":
            from segcp.io.readers import read_json

            raw = read_json(path)
            if not isinstance(raw, dict) or not all(isinstance(v, (str, int)) for v in raw.values()):
                raise SegcpError(f"{path}: a groups JSON must be an object id -> group name")
            table = {str(k): str(v) for k, v in raw.items()}
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SegcpError(f"{path}: cannot read the groups file ({exc.__class__.__name__})") from None
            lines = text.splitlines()
            delim = "\t" if lines and "\t" in lines[0] else ","
            for k, row in enumerate(csv.reader(lines, delimiter=delim)):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise SegcpError(f"{path}: line {k + 1}: expected two columns id,group, got {len(row)}")
                if k == 0 and [c.strip().lower() for c in row] == ["id", "group"]:
                    continue
                table[row[0].strip()] = row[1].strip()
        for i in ids:
            if i not in table:
                raise SegcpError(f"{path}: no group for id {i!r}")
            out[i] = table[i]
    for i, g in out.items():
        if GROUP_NAME.fullmatch(g) is None:
            raise SegcpError(f"--groups: id {i!r} has group {g[:40]!r}; a group name has 1 to 64 printable characters")
    if len(set(out.values())) > MAX_GROUPS:
        raise SegcpError(f"--groups: {len(set(out.values()))} groups, more than {MAX_GROUPS}")
    return out


# ---------------------------------------------------------------------------- monitoring scores
def monitor_score(steps: StepLosses, alpha: float, order: str) -> float:
    """A case's conformal score for monitoring, a function of the case alone: for a loss tested
    ``descending`` (it shrinks as the set grows: FNR) the smallest λ from which on its loss stays
    ≤ α; for ``ascending`` (it grows with the set: FDR) the largest λ up to which it stays ≤ α.
    −inf / +inf at the ends (``steps``: one case)."""
    b, v = steps.breakpoints[0], steps.levels[0]
    over = np.flatnonzero(v > alpha + TOL)
    if order == "descending":
        if over.size == 0:
            return -math.inf
        j = int(over[-1])
        return math.inf if j == b.size else float(b[j])
    if over.size == 0:
        return math.inf
    j = int(over[0])
    return -math.inf if j == 0 else float(b[j - 1])


def _own(item: Case | Prepared, fam: SetFamily) -> Case | Prepared:
    """``item`` itself when it is a bare case or prepared by ``fam``; else its case (a prepared
    case of another configuration of ``vary`` is recomputed, not refused)."""
    return item if not isinstance(item, Prepared) or item.owner == fam.key else item.case


# ---------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class GroupFit:
    """One calibrated λ̂ (marginal, or of one group).

    ``config``: the index of the chosen configuration (``vary``); ``risks``: each loss's mean
    calibration loss at λ̂; ``bound``: CRC's n/(n+1)·R̂ + B/(n+1) (NaN for Learn then Test);
    ``low``/``high``: Learn then Test's certified interval (NaN for CRC); ``fallback``: a group
    too small for its own guarantee, given the marginal λ̂ (``n`` is then its own count).
    """

    lambda_: float
    n: int
    config: int = 0
    risks: tuple[float, ...] = ()
    bound: float = math.nan
    low: float = math.nan
    high: float = math.nan
    fallback: bool = False


class RiskSegmenter:
    """Calibrate a pixel-set family so that its sets control one or several chosen losses.

    Parameters
    ----------
    method : str or SetFamily
        A pixel-set family (threshold, morph, rwcp) by name, or an instance.
    alpha : float or sequence of float
        One risk level per loss, in (0, B).
    loss : str, Loss, or a sequence of them
        Registered loss names (``segcp.losses.available_losses()``) or instances.
    loss_params : dict, optional
        Parameters of the losses given by name: each key goes to the loss that declares it
        (an error when none does).
    delta : float or None
        Learn then Test's family-wise error rate; None: exact CRC (one monotone loss only).
    pvalue : {"hb", "wsr"}
        Learn then Test's p-value.
    method_params : dict, optional
        Parameters of the family given by name.
    vary : (str, sequence) or None
        A second parameter of the family and its values (several losses over a two-parameter
        family; Learn then Test).
    seed : int
        WSR's order of the cases.

    Attributes (after :meth:`calibrate`)
    ------------------------------------
    lambda_, family_, n_, fit_ : the marginal λ̂, its family (the chosen configuration), the
        number of calibration cases and the :class:`GroupFit`.
    groups_ : dict group → GroupFit (empty without groups).
    case_groups : dict id → group used by :meth:`predict` (set it for new cases).
    monitor_ : dict: each calibration case's monitoring score (first loss) and label-free
        statistics (:mod:`segcp.calibration.monitor`), what ``segcp monitor`` compares with.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> masks = [rng.random((8, 8)) < 0.3 for _ in range(60)]
    >>> probs = [np.clip(m * 0.7 + rng.random((8, 8)) * 0.3, 0, 1) for m in masks]
    >>> rs = RiskSegmenter("threshold", alpha=0.2, loss="fdr", delta=0.1).calibrate(probs, masks)
    >>> 0.0 <= rs.lambda_ <= 1.0, rs.n_
    (True, 60)
    """

    def __init__(
        self,
        method: str | SetFamily = "threshold",
        alpha: float | Sequence[float] = 0.1,
        *,
        loss: str | Loss | Sequence[str | Loss] = "fnr",
        loss_params: dict[str, Any] | None = None,
        delta: float | None = None,
        pvalue: str = "hb",
        method_params: dict[str, Any] | None = None,
        vary: tuple[str, Sequence[Any]] | None = None,
        seed: int = 0,
    ) -> None:
        self.method, self.alpha, self.loss, self.loss_params = method, alpha, loss, loss_params
        self.delta, self.pvalue, self.method_params, self.vary, self.seed = delta, pvalue, method_params, vary, seed
        self.case_groups: dict[str, str] = {}
        self.group_source_: str | None = None
        self.monitor_: dict[str, Any] = {"scores": [], "statistics": {}}

    def __repr__(self) -> str:
        return (
            f"RiskSegmenter(method={self.method!r}, alpha={self.alpha!r}, loss={self.loss!r}, delta={self.delta!r}, "
            f"pvalue={self.pvalue!r}, vary={self.vary!r})"
        )

    #: ConformalSegmenter's ``guarantee``, declared for the code that reads either estimator (the engine): none
    #: of the estimator's own here — the losses are what is controlled.
    guarantee: str | None = None

    # ------------------------------------------------------------------ parameters (sklearn-style)
    #: The constructor's parameters (``get_params`` / ``set_params``).
    PARAMS = ("method", "alpha", "loss", "loss_params", "delta", "pvalue", "method_params", "vary", "seed")

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The constructor's parameters as given."""
        return {k: getattr(self, k) for k in self.PARAMS}

    def set_params(self, **params: Any) -> RiskSegmenter:
        """Set constructor parameters (unknown names: a one-line error); returns self."""
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise SegcpError(f"RiskSegmenter: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(self.PARAMS)})")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    # ------------------------------------------------------------------ validation
    def validate(self) -> tuple[list[Loss], list[MaskFamily], tuple[float, ...], str]:
        """(losses, configurations, levels, mode), every parameter checked (one-line errors)."""
        losses, configs = self.losses(), self.configs()
        return losses, configs, self.alphas(losses), self.mode(losses, configs)

    @property
    def family(self) -> MaskFamily:
        """The one family calibrated (an error with ``vary``: one per value, :meth:`configs`)."""
        configs = self.configs()
        if len(configs) != 1:
            raise SegcpError(f"vary {self.vary[0] if self.vary else ''}: several configurations; this needs one family")
        return configs[0]

    def identity(self) -> list[Any]:
        """What besides the family decides the calibration from the same step functions: each loss's
        key, the mode, δ, the p-value and WSR's seed (for content-keyed caches)."""
        losses, _, _, mode = self.validate()
        return [[x.key for x in losses], mode, self.delta, self.pvalue if mode == "ltt" else None, self.seed if mode == "ltt" else None]

    def losses(self) -> list[Loss]:
        """The losses, built and validated (their parameters from ``loss_params``)."""
        raw = [self.loss] if isinstance(self.loss, (str, Loss)) else list(self.loss)
        if not raw:
            raise SegcpError("loss: give at least one loss")
        params = dict(self.loss_params or {})
        out: list[Loss] = []
        from segcp.losses import loss_class

        for item in raw:
            if isinstance(item, Loss):
                out.append(item)
                continue
            cls = loss_class(item)
            if cls.score != "sublevel":  # its λ is on the signed score t: sets of another shape
                raise SegcpError(
                    f"loss {item}: two-sided sets are calibrated with guarantee={item!r} "
                    f"(ConformalSegmenter; calibrate --guarantee {item}), not as a controlled loss"
                )
            mine = {k: params.pop(k) for k in list(params) if k in cls.declared()}
            out.append(get_loss(item, **mine))
        if params:
            raise SegcpError(f"loss parameter(s) {', '.join(sorted(params))} belong to none of the losses {', '.join(x.name for x in out)}")
        if len({x.key for x in out}) != len(out):
            raise SegcpError("loss: the same loss is given twice")
        return out

    def alphas(self, losses: Sequence[Loss]) -> tuple[float, ...]:
        """One level per loss, each in (0, B)."""
        raw: list[Any] = [self.alpha] if np.ndim(self.alpha) == 0 else list(self.alpha)  # type: ignore[arg-type]
        if len(raw) != len(losses):
            raise SegcpError(f"alpha: give one risk level per loss ({len(losses)}: {', '.join(x.name for x in losses)}), got {len(raw)}")
        out = []
        for a, x in zip(raw, losses):
            if x.bound == 1.0:
                out.append(check_alpha(a))
            elif isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < float(a) < x.bound:
                raise SegcpError(f"alpha for {x.name} must be in (0, {x.bound:g}), got {a!r}")
            else:
                out.append(float(a))
        return tuple(out)

    def configs(self) -> list[MaskFamily]:
        """The families calibrated over: the one family, or one per value of ``vary``."""
        if isinstance(self.method, SetFamily):
            if self.method_params or self.vary:
                raise SegcpError("method_params and vary are for a method given by name, not an instance")
            fams = [self.method]
        elif self.vary is None:
            fams = [get_method(self.method, **(self.method_params or {}))]
        else:
            name, values = self.vary
            values = list(values)
            if not values or len(values) != len(set(map(repr, values))):
                raise SegcpError(f"vary {name}: give distinct values")
            if name in (self.method_params or {}):
                raise SegcpError(f"vary {name}: also given as a fixed parameter")
            fams = [get_method(self.method, **((self.method_params or {}) | {name: v})) for v in values]
        out: list[MaskFamily] = []
        for f in fams:
            if not isinstance(f, MaskFamily):
                raise SegcpError(f"losses are for the pixel-set methods; {f.name} calibrates sets of segmentations with its own guarantee")
            out.append(f)
        return out

    def mode(self, losses: Sequence[Loss], configs: Sequence[SetFamily]) -> str:
        """``"crc"`` (one monotone loss, no δ, one configuration) or ``"ltt"``."""
        if self.delta is None:
            if len(losses) > 1 or len(configs) > 1:
                raise SegcpError("several losses, or a varied parameter, are controlled by Learn then Test: give delta")
            if not losses[0].monotone:
                raise SegcpError(f"loss {losses[0].name!r} is not monotone in lambda: it needs Learn then Test (give delta)")
            return "crc"
        check_delta(self.delta)
        if self.pvalue not in PVALUES:
            raise SegcpError(f"unknown p-value {self.pvalue!r}; choose one of {', '.join(PVALUES)}")
        return "ltt"

    def needed(self, losses: Sequence[Loss], alphas: Sequence[float], k: int) -> int:
        """The smallest n with which a guarantee can hold at all (the count guard of a group):
        CRC ``B/α − 1``; Learn then Test: the n from which losses all 0 get a p-value ≤ its level
        (δ / (J·K) with J losses and K configurations)."""
        if self.delta is None:
            return min_calibration_size(alphas[0], losses[0].bound)
        level = float(self.delta) / (len(losses) * k)
        need = 1
        for x, a in zip(losses, alphas):
            lo, hi = 1, 1
            while pvalues(np.zeros((hi, 1)), a, level, pvalue=self.pvalue, B=x.bound, binary=x.binary)[0] > level:
                lo, hi = hi + 1, hi * 2
                if hi > 2**24:
                    raise SegcpError(f"{x.name} at alpha={a:g}, delta={self.delta:g}: more than 2^24 cases would be needed")
            while lo < hi:
                mid = (lo + hi) // 2
                if pvalues(np.zeros((mid, 1)), a, level, pvalue=self.pvalue, B=x.bound, binary=x.binary)[0] <= level:
                    hi = mid
                else:
                    lo = mid + 1
            need = max(need, hi)
        return need

    # ------------------------------------------------------------------ map step
    def case_losses(
        self, item: Case | Prepared, losses: Sequence[Loss], configs: Sequence[MaskFamily], mode: str
    ) -> list[list[LossCurves | StepLosses]]:
        """One case's losses: per configuration, per loss, the exact step function of λ (a
        one-case LossCurves for CRC, StepLosses for Learn then Test)."""
        out = []
        for fam in configs:
            case = fam._case(item)
            r = fam.scores(_own(item, fam))
            y = fam.truth_of(case)
            out.append([x.curve(r, y, case.spacing) if mode == "crc" else x.steps(r, y, case.spacing) for x in losses])
        return out

    def prepare(self, cases: Iterable[Case]) -> list[Prepared]:
        """Each case with its score map computed once (one family, :attr:`family`)."""
        fam = self.family
        return [fam.prepare(c) for c in cases]

    def curves(self, cases: Iterable[Case | Prepared]) -> LossCurves | StepLosses:
        """Map step of one loss on one family: the cases' step functions, concatenated — exact CRC
        curves (:class:`LossCurves`) or Learn then Test's :class:`StepLosses` (what
        :meth:`calibrate_curves` takes; the engine's per-image curves)."""
        losses, _, _, mode = self.validate()
        if len(losses) != 1:
            raise SegcpError("curves: one loss (several are calibrated together by calibrate)")
        parts = [self.case_losses(c, losses, [self.family], mode)[0][0] for c in cases]
        return LossCurves.concat(parts) if mode == "crc" else StepLosses.concat(parts)  # type: ignore[arg-type]  # one kind per mode

    def calibrate_curves(self, curves: LossCurves | StepLosses) -> RiskSegmenter:
        """Reduce step of :meth:`curves`: λ̂ from the cases' step functions (one loss, one family; no
        groups), as :meth:`fit` on the same cases."""
        per_case = [[[curves.take([i])]] for i in range(curves.n)]
        return self.fit(per_case)

    def _statistics(self, fam: MaskFamily, item: Case | Prepared, lam: float) -> dict[str, float]:
        from segcp.calibration.monitor import case_statistics

        case = fam._case(item)
        r = fam.scores(_own(item, fam))
        probs = case.probs if case.probs is not None and case.probs.shape == r.shape else None
        return case_statistics(r, lam, probs=probs)

    # ------------------------------------------------------------------ calibration
    def calibrate(
        self, cases: Iterable[Any], y: Iterable[Any] | None = None, *, groups: Sequence[str] | Mapping[str, str] | None = None, fallback: bool = False
    ) -> RiskSegmenter:
        """Calibrate on labelled cases (or arrays ``cases`` with truths ``y``).

        ``groups``: one group name per case (in order), or a mapping case id → group; each group
        then gets its own λ̂ (``groups_``) beside the marginal one. ``fallback``: a group too small
        for its guarantee gets the marginal λ̂ instead of an error.
        """
        losses, configs, alphas, mode = self.validate()
        items: list[Case | Prepared] = []
        per_case = []
        src: Iterator[Case | Prepared]
        if y is not None:
            src = (configs[0].case_from_arrays(np.asarray(x), np.asarray(t), f"{i}") for i, (x, t) in enumerate(zip(cases, y, strict=True)))
        else:
            src = (c if isinstance(c, (Case, Prepared)) else configs[0].case_from_arrays(np.asarray(c), None, f"{i}") for i, c in enumerate(cases))
        for item in src:
            items.append(item)
            per_case.append(self.case_losses(item, losses, configs, mode))
        ids = [configs[0]._case(it).id for it in items]
        names: list[str] | None = None
        if groups is not None:
            names = [groups[i] for i in ids] if isinstance(groups, Mapping) else [str(g) for g in groups]
            if len(names) != len(items):
                raise SegcpError(f"groups: {len(names)} group names for {len(items)} cases")
        self.fit(per_case, names, losses=losses, configs=configs, alphas=alphas, mode=mode, fallback=fallback)
        self.case_groups = dict(zip(ids, names)) if names is not None else {}
        stats = [self._statistics(self.family_, it, self.lambda_) for it in items]
        self.monitor_ = {
            "scores": [self._score(c[self.fit_.config][0], losses[0], alphas[0], mode) for c in per_case],
            "statistics": {k: [s.get(k, math.nan) for s in stats] for k in stats[0]} if stats else {},
        }
        return self

    @staticmethod
    def _score(part: LossCurves | StepLosses, loss: Loss, alpha: float, mode: str) -> float:
        steps = StepLosses.from_curves(part) if isinstance(part, LossCurves) else part
        return monitor_score(steps, alpha, loss.order)

    def _solve(
        self,
        per_case: Sequence[list[list[Any]]],
        losses: Sequence[Loss],
        configs: Sequence[MaskFamily],
        alphas: Sequence[float],
        mode: str,
        what: str,
    ) -> GroupFit:
        n = len(per_case)
        delta = math.nan if self.delta is None else float(self.delta)
        fam = configs[0]
        ltt: dict[str, Any] = {"pvalue": self.pvalue, "lambda_min": fam.lambda_min, "lambda_max": fam.lambda_max, "seed": self.seed}
        if mode == "crc":
            curves = LossCurves.concat([c[0][0] for c in per_case])
            try:
                res = crc_lambda(curves, alphas[0], lambda_min=fam.lambda_min, B=losses[0].bound)
            except SegcpError as exc:
                raise SegcpError(f"{what}: {exc}") from None
            return GroupFit(float(res.lambda_), n, 0, (float(res.empirical_risk),), bound=float(res.bound))
        if len(losses) == 1 and len(configs) == 1:
            x = losses[0]
            steps = StepLosses.concat([c[0][0] for c in per_case])
            r = ltt_steps(steps, alphas[0], delta, order=x.order, B=x.bound, binary=x.binary, **ltt)
            if r.lambda_ is None:
                raise SegcpError(
                    f"{what}: no lambda is certified for E[{x.name}] <= {alphas[0]:g} at delta={self.delta:g} with n = {n} "
                    f"(Learn then Test): more calibration cases, or a larger alpha or delta"
                )
            return GroupFit(float(r.lambda_), n, 0, (float(r.empirical_risk),), low=float(r.low), high=float(r.high))
        table = [[StepLosses.concat([c[k][j] for c in per_case]) for j in range(len(losses))] for k in range(len(configs))]
        m = ltt_chains(table, list(alphas), delta, orders=[x.order for x in losses], B=[x.bound for x in losses], **ltt)
        if m.config is None or m.lambda_ is None:
            levels = ", ".join(f"E[{x.name}] <= {a:g}" for x, a in zip(losses, alphas))
            raise SegcpError(
                f"{what}: no configuration is certified for {levels} at delta={self.delta:g} with n = {n} "
                f"(Learn then Test over {len(configs)} configuration(s)): more cases, or larger levels or delta"
            )
        lo, hi = m.regions[m.config]
        return GroupFit(float(m.lambda_), n, int(m.config), tuple(float(v) for v in m.risks), low=float(lo), high=float(hi))

    def fit(
        self,
        per_case: Sequence[list[list[Any]]],
        groups: Sequence[str] | None = None,
        *,
        losses: Sequence[Loss] | None = None,
        configs: Sequence[MaskFamily] | None = None,
        alphas: Sequence[float] | None = None,
        mode: str | None = None,
        fallback: bool = False,
    ) -> RiskSegmenter:
        """Reduce step: λ̂ (and one per group) from the cases' losses (:meth:`case_losses`)."""
        losses = list(losses or self.losses())
        configs = list(configs or self.configs())
        alphas = tuple(alphas or self.alphas(losses))
        mode = mode or self.mode(losses, configs)
        n = len(per_case)
        if n == 0:
            raise SegcpError("the calibration set is empty: at least one labelled image is needed")
        need = self.needed(losses, alphas, len(configs))
        if n < need:
            raise SegcpError(
                f"{n} calibration cases: the guarantee needs at least {need} ({self._needs_what(mode)}); use more images or larger levels"
            )
        self.fit_ = self._solve(per_case, losses, configs, alphas, mode, "calibration")
        self.groups_: dict[str, GroupFit] = {}
        if groups is not None:
            if len(groups) != n:
                raise SegcpError(f"groups: {len(groups)} group names for {n} cases")
            for g in sorted(set(groups)):
                idx = [i for i, h in enumerate(groups) if h == g]
                if len(idx) < need:
                    if not fallback:
                        raise SegcpError(
                            f"group {g!r}: {len(idx)} calibration cases, but its own guarantee needs at least {need} "
                            f"({self._needs_what(mode)}); add cases, merge groups, or fall back to the marginal lambda (--group-fallback)"
                        )
                    self.groups_[g] = GroupFit(self.fit_.lambda_, len(idx), self.fit_.config, (), fallback=True)
                    continue
                self.groups_[g] = self._solve([per_case[i] for i in idx], losses, configs, alphas, mode, f"group {g!r}")
        self.losses_, self.alphas_, self.mode_, self.configs_ = tuple(losses), alphas, mode, tuple(configs)
        self.family_ = configs[self.fit_.config]
        self.lambda_ = self.fit_.lambda_
        self.n_ = n
        return self

    def _needs_what(self, mode: str) -> str:
        return (
            "n >= B/alpha - 1 for conformal risk control" if mode == "crc" else "Learn then Test certifies nothing below it, even with every loss 0"
        )

    # ------------------------------------------------------------------ the fitted state, as ConformalSegmenter's
    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise SegcpError("RiskSegmenter is not calibrated: call calibrate() or load a calib.json")

    @property
    def lambdas_(self) -> dict[float, float]:
        """{α of the first loss: λ̂} (what the directory jobs read, as from ConformalSegmenter)."""
        self._check_fitted()
        return {self.alphas_[0]: self.lambda_}

    @property
    def method_(self) -> SetFamily:
        self._check_fitted()
        return self.family_

    @property
    def families_(self) -> dict[float, SetFamily]:
        return {self.alphas_[0]: self.family_}

    @families_.setter
    def families_(self, value: dict[float, SetFamily]) -> None:  # a worker's copy (threads)
        fam = next(iter(value.values()))
        assert isinstance(fam, MaskFamily)
        self.family_ = fam

    def at(self, alpha: float) -> RiskSegmenter:
        """A copy (one calibration per record; ``alpha`` must be the first loss's)."""
        self._check_fitted()
        if float(alpha) != self.alphas_[0]:
            raise SegcpError(f"not calibrated at alpha={alpha:g} (calibrated: {self.alphas_[0]:g})")
        view = RiskSegmenter.__new__(RiskSegmenter)
        view.__dict__.update(self.__dict__)
        view.case_groups = dict(self.case_groups)
        return view

    def group_of(self, ident: str) -> str | None:
        """The group of case ``ident`` (None without groups), or a one-line error."""
        if not self.groups_:
            return None
        g = self.case_groups.get(ident)
        if g is None:
            raise SegcpError(f"case {ident!r}: no group given (calibrated per group: {', '.join(self.groups_)})")
        if g not in self.groups_:
            raise SegcpError(f"case {ident!r}: group {g!r} was not calibrated (groups: {', '.join(self.groups_)})")
        return g

    def fit_of(self, ident: str) -> GroupFit:
        """The fit that applies to case ``ident``: its group's, or the marginal one."""
        g = self.group_of(ident)
        return self.fit_ if g is None else self.groups_[g]

    def family_of(self, fit: GroupFit) -> MaskFamily:
        return self.family_ if fit.config == self.fit_.config else self.configs_[fit.config]

    def predict(self, cases: Any, alpha: float | None = None) -> Any:
        """The set C_λ̂ of a case (its group's λ̂ when calibrated per group): a bool mask; an
        iterable of cases gives an iterator of masks."""
        self._check_fitted()

        def one(item: Any) -> NDArray[np.bool_]:
            if isinstance(item, np.ndarray):
                item = self.family_.case_from_arrays(item, None, "0")
            fit = self.fit_of(self.family_._case(item).id)
            fam = self.family_of(fit)
            return fam.predict(_own(item, fam), fit.lambda_)

        if isinstance(cases, (Case, Prepared, np.ndarray)):
            return one(cases)
        return (one(c) for c in cases)

    def statements(self) -> list[str]:
        """Each loss's guarantee in words."""
        self._check_fitted()
        return [x.statement(a, None if self.mode_ == "crc" else self.delta) for x, a in zip(self.losses_, self.alphas_)]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The calib.json record (:func:`segcp.record.risk_record`)."""
        from segcp.record import risk_record

        self._check_fitted()
        return risk_record(self)

    @classmethod
    def from_parts(cls, rec: dict[str, Any]) -> RiskSegmenter:
        """A calibrated segmenter from the validated parts of a record (:func:`segcp.record.read_risk_record`)."""
        rs = cls(rec["configs"][0], list(rec["alphas"]), loss=list(rec["losses"]), delta=rec["delta"], pvalue=rec["pvalue"])
        rs.vary = rec["vary"]
        rs.losses_, rs.alphas_, rs.mode_, rs.configs_ = tuple(rec["losses"]), tuple(rec["alphas"]), rec["mode"], tuple(rec["configs"])
        rs.fit_, rs.groups_ = GroupFit(**rec["fit"]), {g: GroupFit(**f) for g, f in rec["groups"].items()}
        rs.family_, rs.lambda_, rs.n_ = rec["configs"][rs.fit_.config], rs.fit_.lambda_, rs.fit_.n
        rs.monitor_ = rec["monitor"]
        rs.group_source_ = rec.get("group_source")
        return rs

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration record", overrides: dict[str, Any] | None = None) -> RiskSegmenter:
        from segcp.record import read_record

        return cls.from_parts(read_record(d, where, overrides))
