"""`ConformalSegmenter`: one estimator that calibrates every set family.

The Python API most users need::

    from segcp import ConformalSegmenter, Case
    cs = ConformalSegmenter("threshold", alpha=0.1).calibrate(calibration_cases)
    cs.lambda_                          # calibrated λ̂
    for s in cs.predict(test_cases):    # one prediction set per case
        ...

Every family (``segcp.methods``: threshold, morph, rwcp, consign, aps) goes through the same
three steps: per case a loss curve (map), exact conformal risk control over the concatenated
curves (reduce), and the family's set at λ̂. ``alpha`` may be a list: the curves are built
once and λ̂ is found for every α (``lambdas_``; :meth:`at` gives a single-α view).
Arrays can stand in for cases: ``cs.calibrate(probs_list, masks_list)``.

Calibration is map/reduce: :meth:`curves` turns any batch of cases into
:class:`~segcp.calibration.LossCurves` (on any machine), curves concatenate
(``LossCurves.concat``), and :meth:`calibrate_curves` turns them into λ̂. For repeated use
(many splits of the same images, several α), :meth:`prepare` computes each case's
family-specific state once (score maps, decompositions); prepared cases go wherever cases go.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from segcp.calibration import CRCResult, LossCurves, check_alpha, check_calibration_size, crc_lambda
from segcp.calibration.compact import CURVE_FORMS, GRID_SIZE, CompactCurves, CurveAccumulator, Grid, compact_crc_lambda, default_grid
from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.methods import Prepared, SetFamily, get_method
from segcp.methods.base import BAND_GUARANTEES
from segcp.parallel import Executor, open_executor

__all__ = ["ConformalSegmenter", "CurveBatch", "MapPlan"]

Item = Case | Prepared
Curves = LossCurves | CompactCurves


class ConformalSegmenter:
    """Calibrate a set family so that its sets carry a finite-sample guarantee.

    Parameters
    ----------
    method : str or SetFamily
        A registered family name (``"threshold"``, ``"morph"``, ``"rwcp"``, ``"consign"``,
        ``"aps"``; see :func:`segcp.available_methods`) or an instance.
    alpha : float or sequence of float
        Risk level(s) in (0, 1). Several α share one pass over the calibration cases.
    guarantee : {"fnr", "quantile", "contains", "band", "band-risk"} or None
        ``"fnr"``: E[false-negative rate] ≤ α by exact conformal risk control.
        ``"band"`` (threshold, morph, rwcp): two-sided sets, P(inner ⊆ truth ⊆ outer) ≥ 1 − α
        (τ < 1: outer recall and inner precision ≥ τ); ``"band-risk"``: E[max(FNR(outer),
        min(1, |inner \\ truth| / |truth|))] ≤ α. :meth:`predict` then gives (inner, outer).
        ``"quantile"``: P(coverage ≥ τ) ≥ 1 − α (τ = 1: the whole truth inside the set).
        ``"contains"`` (sets of segmentations): P(the set contains the truth up to β) ≥ 1 − α.
        None: the family's default (``fnr`` for pixel sets, ``contains`` for CONSIGN/APS).
    tau : float
        Coverage ratio for ``guarantee="quantile"``.
    method_params : dict, optional
        Parameters of the family when ``method`` is a name (see ``segcp methods``).
    n_jobs : int
        Processes for the map step of :meth:`calibrate` (1: in this process; -1: one per CPU),
        a :class:`~segcp.parallel.PoolExecutor` (:func:`segcp.parallel.open_executor`). A
        run-time option: it changes nothing in the result.
    curve_form : {"auto", "exact", "compact"}
        How the map step keeps the FNR curves (:mod:`segcp.calibration.compact`): ``exact``
        (every breakpoint; λ̂ exact), ``compact`` (the summed risk on a grid of ``grid_size``
        points: memory independent of n, λ̂ the first grid point at or above the exact λ̂),
        ``auto`` (exact while the curves hold at most ``EXACT_LIMIT`` = 2^26 breakpoints).
        0/1 curves (``quantile``, ``contains``) are always exact.
    grid_size, grid_max : int, float or None
        The compact grid: ``grid_size`` points over the family's λ range (integer λ: the
        integers from λ_min; unbounded λ: up to ``grid_max``, default λ_min + 1024).

    Attributes
    ----------
    lambda_ : float
        Calibrated λ̂ (single α; see ``lambdas_`` for several).
    lambdas_ : dict of float to float
        λ̂ per α.
    result_, results_ : CRCResult, dict of float to CRCResult
        Details of the calibration (empirical risk, bound), for one or every α.
    n_ : int
        Number of calibration cases.
    family_ : SetFamily
        The family (for α-dependent families, :meth:`SetFamily.bind_alpha` gives the one
        used at each α).
    scores_ : ndarray or None
        For 0/1 losses (``quantile``, ``contains``): each calibration case's score λ*_i
        (+inf: never in the set), whose conformal quantile λ̂ is.
    grid_ : Grid or None
        The grid when λ̂ came from compact curves (None: exact).
    volume_ : dict or None
        Two-sided sets of a directory job: the direct volume interval (calib.json's ``volume``).
    losses_, groups_, group_source_ : (), {}, None
        What every calibrated estimator declares for the directory jobs: the losses controlled
        beside the family's own guarantee and the λ̂ per group (:class:`~segcp.risk.RiskSegmenter`
        has them; here none: one λ̂ per α, the family's guarantee).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> masks = [rng.random((8, 8)) < 0.3 for _ in range(20)]
    >>> probs = [np.clip(m * 0.7 + rng.random((8, 8)) * 0.3, 0, 1) for m in masks]
    >>> cs = ConformalSegmenter("threshold", alpha=[0.2, 0.1]).calibrate(probs, masks)
    >>> sorted(cs.lambdas_) == [0.1, 0.2], cs.n_
    (True, 20)
    >>> cs.at(0.2).predict(probs[0]).shape
    (8, 8)
    """

    volume_: dict[str, Any] | None = None
    losses_: tuple[Any, ...] = ()
    groups_: Mapping[str, Any] = MappingProxyType({})
    group_source_: str | None = None

    def __init__(
        self,
        method: str | SetFamily = "threshold",
        alpha: float | Sequence[float] = 0.1,
        *,
        guarantee: str | None = None,
        tau: float = 1.0,
        method_params: dict[str, Any] | None = None,
        n_jobs: int = 1,
        curve_form: str = "auto",
        grid_size: int = GRID_SIZE,
        grid_max: float | None = None,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.guarantee = guarantee
        self.tau = tau
        self.method_params = method_params
        self.n_jobs = n_jobs
        self.curve_form = curve_form
        self.grid_size = grid_size
        self.grid_max = grid_max

    # ------------------------------------------------------------------ sklearn-style parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (sklearn convention, so that ``clone`` works)."""
        return {
            "method": self.method,
            "alpha": self.alpha,
            "guarantee": self.guarantee,
            "tau": self.tau,
            "method_params": self.method_params,
            "n_jobs": self.n_jobs,
            "curve_form": self.curve_form,
            "grid_size": self.grid_size,
            "grid_max": self.grid_max,
        }

    def set_params(self, **params: Any) -> ConformalSegmenter:
        """Set constructor parameters; returns self (the learned state is kept until refit)."""
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise SegcpError(f"ConformalSegmenter has no parameter {key!r}; parameters: {', '.join(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        name = self.method if isinstance(self.method, str) else repr(self.method)
        extra = f", method_params={self.method_params!r}" if self.method_params else ""
        return f"ConformalSegmenter(method={name!r}, alpha={self.alpha!r}, guarantee={self.guarantee!r}, tau={self.tau!r}{extra})"

    # ------------------------------------------------------------------ validation
    @property
    def family(self) -> SetFamily:
        """The family these parameters describe (built and validated on each access)."""
        if isinstance(self.method, SetFamily):
            if self.method_params:
                raise SegcpError("method_params are for a method given by name, not an instance")
            return self.method
        return get_method(self.method, **(self.method_params or {}))

    def alphas(self) -> tuple[float, ...]:
        """The risk levels, validated, in the order given."""
        raw: list[Any] = [self.alpha] if np.ndim(self.alpha) == 0 else list(self.alpha)  # type: ignore[arg-type]
        if not raw:
            raise SegcpError("alpha: give at least one risk level")
        out = tuple(check_alpha(a) for a in raw)
        if len(set(out)) != len(out):
            raise SegcpError(f"alpha: repeated risk levels {list(out)}")
        return out

    def _validate(self) -> tuple[SetFamily, str, tuple[float, ...]]:
        fam = self.family
        guarantee = fam.check_guarantee(self.guarantee)
        if guarantee == "quantile":
            try:
                tau = float(self.tau)
            except (TypeError, ValueError):
                tau = math.nan
            if not 0.0 < tau <= 1.0:
                raise SegcpError(f"tau must be in (0, 1], got {self.tau!r}")
        return fam, guarantee, self.alphas()

    def _groups(self, fam: SetFamily, alphas: Sequence[float]) -> list[tuple[SetFamily, list[float]]]:
        """The distinct families bound to each α (one group unless the family depends on α)."""
        groups: dict[str, tuple[SetFamily, list[float]]] = {}
        for a in alphas:
            bound = fam.bind_alpha(a)
            groups.setdefault(bound.key, (bound, []))[1].append(a)
        return list(groups.values())

    def _single_group(self, fam: SetFamily, alphas: Sequence[float], what: str) -> SetFamily:
        groups = self._groups(fam, alphas)
        if len(groups) > 1:
            raise SegcpError(
                f"{what}: the {fam.name} sets depend on alpha ({', '.join(f'{a:g}' for a in alphas)}); "
                f"fix the alpha-dependent parameter (e.g. box_alpha) or use one alpha at a time"
            )
        return groups[0][0]

    def plan(self) -> MapPlan:
        """What the map step computes (:class:`MapPlan`): the families bound to the α groups
        (one group unless the sets depend on α), the guarantee, the curve form and its grids.

        The form is ``exact`` for 0/1 curves (one breakpoint per image already); a grid is None
        for exact curves.
        """
        fam, guarantee, alphas = self._validate()
        groups = tuple((bound, tuple(group_alphas)) for bound, group_alphas in self._groups(fam, alphas))
        form = self.curve_form
        if form not in CURVE_FORMS:
            raise SegcpError(f"curve_form must be one of {', '.join(CURVE_FORMS)}, got {form!r}")
        if guarantee != "fnr":
            if form == "compact":
                raise SegcpError(f"curve_form='compact' is for FNR curves; {guarantee} curves have one breakpoint per image and stay exact")
            form = "exact"
        if form == "exact":
            return MapPlan(fam, guarantee, float(self.tau), groups, form, tuple(None for _ in groups))
        try:
            size = int(self.grid_size)
            top = None if self.grid_max is None else float(self.grid_max)
        except (TypeError, ValueError):
            raise SegcpError(f"grid_size must be an integer and grid_max a number, got {self.grid_size!r}, {self.grid_max!r}") from None
        grids = tuple(default_grid(b.lambda_min, b.lambda_max, integer=b.integer_lambda, size=size, grid_max=top) for b, _ in groups)
        return MapPlan(fam, guarantee, float(self.tau), groups, form, grids)

    def curve_plan(self) -> tuple[SetFamily, str, str, Grid | None]:
        """(the bound family, the guarantee, the curve form, the compact grid) of a map step
        whose sets do not depend on α (one group; :meth:`plan` for several)."""
        plan = self.plan()
        fam, _, alphas = self._validate()
        bound = self._single_group(fam, alphas, "curves")
        return bound, plan.guarantee, plan.form, plan.grids[0]

    def accumulator(self) -> CurveAccumulator:
        """The reduce step's memory for this estimator's curve form (:class:`CurveAccumulator`)."""
        _, _, form, grid = self.curve_plan()
        return CurveAccumulator(form, grid)

    def merge(self, parts: Iterable[Curves]) -> Curves:
        """Merge the curves of several batches (from :meth:`curves`, on any machines), in order."""
        acc = self.accumulator()
        for i, part in enumerate(parts):
            acc.add(i, part)
        return acc.result()

    # ------------------------------------------------------------------ cases
    def _items(self, fam: SetFamily, cases: Any, y: Any = None) -> Iterator[Item]:
        """Cases (or prepared cases) from cases, or from arrays with their truths ``y``."""
        if y is not None:
            for i, (x, t) in enumerate(zip(cases, y, strict=True)):
                yield fam.case_from_arrays(x, t, f"{i}")
            return
        for i, c in enumerate(cases):
            if isinstance(c, (Case, Prepared)):
                yield c
            elif isinstance(c, np.ndarray):
                yield fam.case_from_arrays(c, None, f"{i}")
            else:
                raise SegcpError(f"item {i}: expected a Case, a prepared case or an array, got {type(c).__name__}")

    def prepare(self, cases: Iterable[Any], y: Iterable[Any] | None = None) -> list[Prepared]:
        """Each case with its family state computed once (score maps, decompositions)."""
        fam, _, alphas = self._validate()
        bound = self._single_group(fam, alphas, "prepare")
        return [bound.prepare(c) for c in self._items(bound, cases, y)]

    # ------------------------------------------------------------------ calibration
    def curves(self, cases: Iterable[Any], y: Iterable[Any] | None = None) -> Curves:
        """Map step: the loss curves of the cases (needs their truth), merged.

        Exact curves (:class:`LossCurves`) concatenate; with ``curve_form="compact"`` (or
        ``auto`` past its limit) each case's curve is compacted as soon as it is built and the
        result is one :class:`~segcp.calibration.compact.CompactCurves`. :meth:`merge` merges
        batches of either form.
        """
        _bound, _, _, _ = self.curve_plan()
        return self._map(cases, y)[0]

    def _executor(self) -> Executor:
        """Where :meth:`calibrate`'s map step runs: ``n_jobs`` processes, or this process."""
        n = self.n_jobs
        if n == -1:
            n = os.cpu_count() or 1
        if n in (None, 0):
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SegcpError(f"n_jobs must be a positive integer (processes) or -1 (one per CPU), got {self.n_jobs!r}")
        return open_executor(workers=n, dask=False)

    def _map(self, cases: Any, y: Any = None) -> list[Curves]:
        """The map step over cases (streamed in this process; chunks on ``n_jobs`` processes):
        the merged curves of every α group of :meth:`plan`."""
        plan = self.plan()
        accs = plan.accumulators()
        items = self._items(plan.groups[0][0], cases, y)
        with self._executor() as ex:
            head = (plan.families, plan.guarantee, plan.tau, plan.worker_grids)
            for i, parts in ex.map_chunks(_curve_chunk, head, items, show_progress=False):
                for acc, part in zip(accs, parts):
                    acc.add(i, part)
        return [acc.result() for acc in accs]

    def calibrate_curves(self, curves: Curves | Sequence[Curves]) -> ConformalSegmenter:
        """Reduce step: λ̂ for every α from (possibly merged) exact or compact curves — one
        :class:`~segcp.calibration.LossCurves` (or compact curves), or when the sets depend on
        α a list with the curves of each group of :meth:`plan`, in its order."""
        fam, guarantee, alphas = self._validate()
        if isinstance(curves, (LossCurves, CompactCurves)):
            self._fit(fam, guarantee, [(self._single_group(fam, alphas, "calibrate_curves"), alphas, curves)])
            return self
        groups = self._groups(fam, alphas)
        parts = list(curves)
        if len(parts) != len(groups):
            raise SegcpError(f"calibrate_curves: {len(parts)} sets of curves for {len(groups)} alpha groups")
        self._fit(fam, guarantee, [(bound, group_alphas, part) for (bound, group_alphas), part in zip(groups, parts)])
        return self

    def calibrate(self, cases: Iterable[Any], y: Iterable[Any] | None = None) -> ConformalSegmenter:
        """Calibrate on labelled cases (or arrays and their truths ``y``); sets ``lambdas_``, ``n_``…

        One pass over the cases (streamed: one in memory at a time in this process), whatever
        the number of α; the sets of an α-dependent family are built per α group.
        """
        return self.calibrate_curves(self._map(cases, y))

    def _fit(self, fam: SetFamily, guarantee: str, fits: list[tuple[SetFamily, list[float] | tuple[float, ...], Curves]]) -> None:
        results: dict[float, CRCResult] = {}
        families: dict[float, SetFamily] = {}
        n = None
        scores = None
        grid = None
        for bound, group_alphas, curves in fits:
            compact = isinstance(curves, CompactCurves)
            for a in group_alphas:
                check_calibration_size(curves.n, a)
                try:
                    if compact:
                        results[a] = compact_crc_lambda(curves, a, lambda_min=bound.lambda_min)  # type: ignore[arg-type]
                    else:
                        results[a] = crc_lambda(curves, a, lambda_min=bound.lambda_min)  # type: ignore[arg-type]
                except SegcpError as exc:
                    if str(exc).startswith("no lambda satisfies") and not compact:
                        raise SegcpError(bound.infeasible(curves, a) or str(exc)) from None  # type: ignore[arg-type]
                    raise
                families[a] = bound
            n = curves.n
            grid = curves.grid if compact else None  # type: ignore[union-attr]
            if guarantee != "fnr" and not compact:
                scores = curves.zero_one_scores()  # type: ignore[union-attr]
        order = [a for a in self.alphas() if a in results]
        self.family_ = fam
        self.guarantee_ = guarantee
        self.results_ = {a: results[a] for a in order}
        self.lambdas_ = {a: results[a].lambda_ for a in order}
        self.families_ = {a: families[a] for a in order}
        self.n_ = int(n or 0)
        self.scores_ = scores
        self.grid_ = grid

    # ------------------------------------------------------------------ fitted state
    def _check_fitted(self) -> None:
        if not hasattr(self, "lambdas_"):
            raise SegcpError("ConformalSegmenter is not calibrated: call calibrate() or load a calib.json")

    def _alpha_of(self, alpha: float | None) -> float:
        self._check_fitted()
        if alpha is None:
            if len(self.lambdas_) > 1:
                raise SegcpError(f"calibrated at several alphas ({', '.join(f'{a:g}' for a in self.lambdas_)}): pass alpha=..., or use at(alpha)")
            return next(iter(self.lambdas_))
        a = check_alpha(alpha)
        if a not in self.lambdas_:
            raise SegcpError(f"not calibrated at alpha={a:g} (calibrated: {', '.join(f'{b:g}' for b in self.lambdas_)})")
        return a

    @property
    def lambda_(self) -> float:
        """λ̂ (the single calibrated α)."""
        return self.lambdas_[self._alpha_of(None)]

    @property
    def result_(self) -> CRCResult:
        """The calibration details (the single calibrated α)."""
        return self.results_[self._alpha_of(None)]

    @property
    def method_(self) -> SetFamily:
        """The family bound to the single calibrated α (what :meth:`predict` uses)."""
        return self.families_[self._alpha_of(None)]

    def at(self, alpha: float) -> ConformalSegmenter:
        """A calibrated single-α view of this segmenter (shares the family)."""
        a = self._alpha_of(alpha)
        view = ConformalSegmenter(self.method, a, **{k: v for k, v in self.get_params().items() if k not in ("method", "alpha")})
        view.family_, view.guarantee_, view.n_, view.scores_ = self.family_, self.guarantee_, self.n_, self.scores_
        view.grid_ = getattr(self, "grid_", None)
        view.volume_ = self.volume_
        view.results_, view.lambdas_, view.families_ = {a: self.results_[a]}, {a: self.lambdas_[a]}, {a: self.families_[a]}
        return view

    # ------------------------------------------------------------------ prediction
    def predict(self, cases: Any, alpha: float | None = None) -> Any:
        """The calibrated prediction set of a case, or an iterator over the sets of many.

        A single :class:`Case`, prepared case or array gives its set: a boolean mask shaped
        like the case's grid (pixel-set families; ``guarantee="band"``/``"band-risk"``: the pair
        (inner, outer) of such masks, inner ⊆ outer) or a
        :class:`~segcp.methods.SegmentationSet` (a sampler with a membership test). An
        iterable of them yields one set per item, lazily.
        """
        a = self._alpha_of(alpha)
        fam, lam = self.families_[a], self.lambdas_[a]
        make = fam.predict_band if self.guarantee_ in BAND_GUARANTEES else fam.predict  # type: ignore[attr-defined]  # two-sided: (I, O)
        if isinstance(cases, (Case, Prepared, np.ndarray)):
            return make(next(self._items(fam, [cases])), lam)
        return (make(it, lam) for it in self._items(fam, cases))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record of the calibration (what ``calib.json`` holds; written by
        :func:`segcp.record.estimator_record`)."""
        from segcp.record import estimator_record

        self._check_fitted()
        alphas = list(self.lambdas_)
        if len({self.families_[a].key for a in alphas}) > 1:
            raise SegcpError("to_dict: the sets depend on alpha; write one record per alpha (at(alpha).to_dict())")
        return estimator_record(
            self.families_[alphas[0]],
            self.guarantee_,
            float(self.tau),
            alphas,
            [self.lambdas_[a] for a in alphas],
            [self.results_[a].empirical_risk for a in alphas],
            [self.results_[a].bound for a in alphas],
            self.n_,
            self.scores_,
            getattr(self, "grid_", None),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration record", overrides: dict[str, Any] | None = None) -> ConformalSegmenter:
        """Rebuild a calibrated segmenter from :meth:`to_dict` output (validated field by field).

        ``overrides``: run-time options and locations given on this machine
        (:func:`segcp.record.read_record`).
        """
        from segcp.record import read_record

        return cls.from_parts(read_record(d, where, overrides))

    @classmethod
    def from_parts(cls, rec: dict[str, Any]) -> ConformalSegmenter:
        """A calibrated segmenter from the validated parts of a record (:func:`segcp.record.read_record`)."""
        fam = rec["family"]
        cs = cls(fam, rec["alphas"] if len(rec["alphas"]) > 1 else rec["alphas"][0], guarantee=rec["guarantee"], tau=rec["tau"])
        cs.family_, cs.guarantee_, cs.n_ = fam, rec["guarantee"], rec["n"]
        cs.results_, cs.lambdas_, cs.families_ = {}, {}, {}
        for a, lam, risk, bound in zip(rec["alphas"], rec["lambdas"], rec["risks"], rec["bounds"]):
            cs.results_[a] = CRCResult(lam, a, rec["n"], risk, bound)
            cs.lambdas_[a] = lam
            cs.families_[a] = fam
        cs.scores_ = rec["scores"]
        cs.grid_ = rec["grid"]
        cs.volume_ = rec.get("volume")  # two-sided sets of a directory job: the direct volume interval
        return cs


@dataclass(frozen=True)
class MapPlan:
    """What an estimator's map step computes (:meth:`ConformalSegmenter.plan`).

    ``groups``: (the family bound to the α of the group, those α) — one group unless the sets
    depend on α (CONSIGN's box); every case gets one curve per group. ``form``/``grids``: how
    the reduce keeps the curves (``grids[g]`` None for exact curves).
    """

    family: SetFamily
    guarantee: str
    tau: float
    groups: tuple[tuple[SetFamily, tuple[float, ...]], ...]
    form: str
    grids: tuple[Grid | None, ...]

    @property
    def families(self) -> tuple[SetFamily, ...]:
        """The bound family of each group."""
        return tuple(g[0] for g in self.groups)

    @property
    def worker_grids(self) -> tuple[Grid | None, ...]:
        """The grids a worker compacts its batch on (only for ``compact``; ``auto`` sends exact
        parts, compacted by the reduce if they grow too large)."""
        return self.grids if self.form == "compact" else tuple(None for _ in self.grids)

    def accumulators(self) -> list[CurveAccumulator]:
        """The reduce step's memory, one per group."""
        return [CurveAccumulator(self.form, g) for g in self.grids]

    def batch(self) -> CurveBatch:
        """An empty :class:`CurveBatch` of this plan (a worker's part of the map step)."""
        return CurveBatch(self.families, self.guarantee, self.tau, self.worker_grids)


class CurveBatch:
    """A worker's part of the map step: the curves of a batch of cases, one per family (α
    group), merged in order — concatenated, or compacted on the worker when a grid is given."""

    def __init__(self, families: Sequence[SetFamily], guarantee: str, tau: float, grids: Sequence[Grid | None]) -> None:
        self.families, self.guarantee, self.tau, self.grids = tuple(families), guarantee, float(tau), tuple(grids)
        self._curves: list[list[LossCurves]] = [[] for _ in self.families]

    def add(self, item: Item) -> None:
        """The curves of one case (it may be dropped afterwards)."""
        for held, fam in zip(self._curves, self.families):
            held.append(_loss_curve(fam, item, self.guarantee, self.tau))

    def result(self) -> list[Curves]:
        """Per family, the batch's curves as one part of the reduce."""
        out: list[Curves] = []
        for held, grid in zip(self._curves, self.grids):
            if grid is None:
                out.append(held[0] if len(held) == 1 else LossCurves.concat(held))
                continue
            acc = CurveAccumulator("compact", grid)
            for k, c in enumerate(held):
                acc.add(k, c)
            out.append(acc.result())
        return out


def _loss_curve(fam: SetFamily, item: Item, guarantee: str, tau: float) -> LossCurves:
    """One case's loss curve: the family's own, or for a two-sided guarantee the registered loss
    of that name on the family's signed score (:func:`segcp.losses.guarantee_loss`)."""
    if guarantee not in BAND_GUARANTEES:
        return fam.loss_curve(item, guarantee, tau)
    from segcp.losses import guarantee_loss

    case = item.case if isinstance(item, Prepared) else item
    return guarantee_loss(guarantee, tau).curve(fam.signed_map(case), fam.truth_of(case))  # type: ignore[attr-defined]


def _curve_chunk(task: tuple[tuple[SetFamily, ...], str, float, tuple[Grid | None, ...], list[Item]]) -> list[Curves]:
    """Worker: the curves of a chunk of in-memory cases (:meth:`ConformalSegmenter.calibrate`)."""
    families, guarantee, tau, grids, items = task
    batch = CurveBatch(families, guarantee, tau, grids)
    for item in items:
        batch.add(item)
    return batch.result()
