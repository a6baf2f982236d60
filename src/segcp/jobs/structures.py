"""Every structure in one call: one λ̂ per structure of a class-probability stack.

``--labels all`` (or a list of label values or names) calibrates a pixel-set family once per
structure l of a multi-class model: the case's foreground map is channel l of its class
probabilities (L, *S) and its truth is ``label_map == l``. Each structure gets its own λ̂ and
its own guarantee, E[FNR_l] ≤ α for every l (or P(coverage_l ≥ τ) ≥ 1 − α); an image where a
structure is absent counts for it with FNR 0, the empty-ground-truth rule. A structure that no
calibration mask holds is an error (it would calibrate a meaningless λ̂ = λ_min). Names come
from nnU-Net's ``dataset.json`` when there is one; they become folder names only through
:class:`segcp.record.Structure` (a fixed safe form), and labels become channels only through
:func:`segcp.cases.channel_of` (checked against the stack read).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segcp.cases import Case, channel_of
from segcp.errors import SegcpError
from segcp.record import Structure, check_structures

__all__ = ["Structure", "resolve_structures", "split_case"]


def resolve_structures(
    spec: str | Sequence[str | int], names: dict[int, str] | None, n_channels: int, where: str, names_from: str = "dataset.json"
) -> list[Structure]:
    """The structures of ``--labels``: ``"all"`` (every non-background label of ``names``, read from
    ``names_from`` — dataset.json, or a calibration — or channels 1..L−1), or values / names separated by
    commas. The background (label 0) is calibrated only when named (``background`` or its name in
    dataset.json), never by the number 0; ``"all"`` needs a name for every channel of the stacks."""
    names = dict(names or {})
    if isinstance(spec, str):
        tokens: list[str | int] = [t.strip() for t in spec.split(",") if t.strip()]
    else:
        tokens = list(spec)
    if not tokens:
        raise SegcpError("--labels: give 'all' or a list of labels (numbers or names)")
    if tokens == ["all"]:
        unnamed = [c for c in range(1, n_channels) if names and c not in names]
        if unnamed:  # the others would be calibrated and this one left out without a word
            raise SegcpError(
                f"{names_from}: no label has the value {unnamed[0]}, a structure of the probability stacks ({n_channels} "
                f"channels, {where}); add it to 'labels' or list the structures to calibrate (--labels 1,2)"
            )
        values = [v for v in sorted(names) if v != 0] if names else list(range(1, n_channels))
    else:
        by_name = {"background": 0} | {n: v for v, n in names.items()}
        values = []
        for t in tokens:
            if isinstance(t, int) or (isinstance(t, str) and t.lstrip("-").isdigit()):
                if int(t) == 0:
                    raise SegcpError(
                        f"--labels: label 0 is the background; to calibrate a set for it anyway, name it (--labels {names.get(0, 'background')},...)"
                    )
                values.append(int(t))
            elif t in by_name:
                values.append(by_name[t])
            else:
                known = ", ".join(f"{n}={v}" for v, n in sorted(names.items())) or "no dataset.json found"
                raise SegcpError(f"--labels: label name {t!r} is not in dataset.json ({known})")
    out = []
    for v in values:
        if not 0 <= v < n_channels:
            raise SegcpError(f"{where}: label {v} has no channel in a probability stack of {n_channels} classes")
        out.append(Structure.make(v, names.get(v, f"label{v}")))
    if len({s.value for s in out}) != len(out):
        raise SegcpError(f"--labels: repeated labels {[s.value for s in out]}")
    return check_structures(out, "--labels")


def split_case(case: Case, structures: Sequence[Structure]) -> list[Case]:
    """One binary case per structure from a stack case (``class_probs`` (L, *S), ``label_map``);
    each structure's channel checked against the stack (:func:`segcp.cases.channel_of`)."""
    if case.class_probs is None:
        raise SegcpError(f"{case.where or case.id}: not a class-probability stack")
    where = case.where or case.id
    out = []
    for s in structures:
        c = channel_of(s.value, case.class_probs.shape, where)
        mask = None if case.label_map is None else case.label_map == s.value
        out.append(
            Case(
                case.id,
                np.ascontiguousarray(case.class_probs[c]),
                mask=mask,
                image=case.image,
                spacing=case.spacing,
                geometry=case.geometry,
                where=f"{where} (label {s.value} {s.name})",
            )
        )
    return out
