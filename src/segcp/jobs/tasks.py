"""What a directory job's tasks carry (:class:`Job`: paths and parameters, never arrays); the index and
reader are built once per process and job, and this process reads through the client's own (:meth:`Job.share`).
"""

from __future__ import annotations

import sys
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import CaseReader, DataDir
from segcp.io.datadir import DataSpec
from segcp.jobs.structures import split_case
from segcp.parallel import worker_threads
from segcp.record import Calibration, Structure

__all__ = ["Job", "calibrated_models", "check_seed", "datadir", "draw_seed", "job_of", "note_unused", "worker_family"]

_KEEP = 4  # jobs remembered per process
_datadirs: OrderedDict[tuple[DataSpec, str], DataDir] = OrderedDict()
_readers: OrderedDict[Job, CaseReader] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _KEEP:
        cache.popitem(last=False)
    return value


def datadir(data: DataSpec, token: str) -> DataDir:
    """The inputs' index, once per process and job (``token``: files may change between jobs)."""
    dd = _datadirs.get((data, token))
    return dd if dd is not None else _remember(_datadirs, (data, token), DataDir(data))


@dataclass(frozen=True)
class Job:
    """What every task of a directory job carries: ``data``, ``family`` (pickled as its parameters), ``label``,
    ``channels``, ``with_truth`` (as :meth:`DataDir.reader`); ``structures``: each id read once as its class
    stack and split per structure (``with_image``: images/ too); ``token`` names the job, ``version`` the
    client's segcp (workers must run it); ``ndim``: the calibration's grid dimensionality, which every image read must have.
    """

    data: DataSpec
    family: Any = field(compare=False)
    label: int | None = None
    channels: bool | str | None = False
    with_truth: bool = True
    structures: tuple[Structure, ...] = ()
    with_image: bool = False
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    version: str = __version__
    ndim: int | None = None

    @property
    def slots(self) -> int:
        """Cases per id: one per structure, or one."""
        return max(1, len(self.structures))

    def _check_version(self) -> None:
        if self.version != __version__:
            raise SegcpError(f"a worker runs segcp {__version__} but the client runs {self.version}: install the same segcp on every worker")

    def datadir(self) -> DataDir:
        """The job's directory index in this process (built once per process and job)."""
        self._check_version()
        return datadir(self.data, self.token)

    def reader(self) -> CaseReader:
        """The job's case reader in this process (built once per process and job)."""
        if (reader := _readers.get(self)) is None:
            reader = self.datadir().reader(self.family, label=self.label, with_truth=self.with_truth, channels=self.channels)
        return _remember(_readers, self, reader)

    def share(self, dd: DataDir, reader: CaseReader | None = None) -> Job:
        """Let this process read through the client's own index (and reader) of the job."""
        _remember(_datadirs, (self.data, self.token), dd)
        if reader is not None:
            _remember(_readers, self, reader)
        return self

    def read(self, ident: str) -> list[Case]:
        """The cases of one id: one per structure (split from its class stack), or its one case."""
        if self.structures:
            stack = self.datadir().load_stack(ident, channels=str(self.channels), with_mask=self.with_truth, with_image=self.with_image)
            cases = split_case(stack, self.structures)
        else:
            cases = [self.reader().read(ident)]
        if self.ndim is not None and len(cases[0].shape) != self.ndim:
            raise SegcpError(f"{cases[0].where or ident}: a {len(cases[0].shape)}-D image, but the calibration was made on {self.ndim}-D images")
        return cases


def calibrated_models(cal: Calibration, alpha: float | None = None) -> list[ConformalSegmenter]:
    """Each structure's calibrated estimator, at ``alpha`` (needed when calibrated at several)."""
    models = []
    for parts in cal.parts:
        cs = ConformalSegmenter.from_parts(parts)
        if alpha is None and len(cs.lambdas_) > 1:
            raise SegcpError(f"{cal.path}: calibrated at several alphas ({', '.join(f'{a:g}' for a in cs.lambdas_)}); pass --alpha")
        models.append(cs if alpha is None else cs.at(alpha))
    return models


def job_of(dd: DataDir, cal: Calibration, family: Any, *, with_truth: bool, images: bool = True) -> tuple[Job, list[str]]:
    """(the job, its ids) reading from ``dd`` what the calibration read (``images``: images/ when the family
    uses them)."""
    if cal.per_structure:
        with_image = images and "image" in family.inputs
        ids = dd.ids(["probs", *(["masks"] if with_truth else []), *(["images"] if with_image else [])])
        return Job(dd.spec, family, None, cal.channels, with_truth, cal.structures, with_image, ndim=cal.ndim).share(dd), ids
    reader = dd.reader(family, label=cal.label, with_truth=with_truth, channels=cal.channels)
    return Job(dd.spec, family, cal.label, reader.channels, with_truth, ndim=cal.ndim).share(dd, reader), reader.ids


def note_unused(dd: DataDir, source: Any = None) -> None:
    """Say on stderr, in one line, how many files of the folders given on their own the job left
    unread (nnU-Net's labelsTr beside a prediction folder of fewer cases; ``source``: the folder
    that chose the cases, when not the model output's)."""
    note = dd.unused_note(source)
    if note is not None:
        sys.stderr.write(f"segcp: note: {note}\n")


def worker_family(family: Any) -> Any:
    """The family as a worker runs it: an unset run-time ``threads`` becomes the worker's own thread count
    (the sets and λ̂ are the same)."""
    n = worker_threads()
    return family if n is None else family.with_threads(n)


def check_seed(seed: Any) -> int:
    """``--seed``: a non-negative integer, else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SegcpError(f"--seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def draw_seed(seed: int, k: int) -> int:
    """The seed of the draws of the k-th id (sorted order) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([check_seed(seed), int(k)]).generate_state(1)[0])
