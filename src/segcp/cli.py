"""The ``segcp`` command line: calibrate, predict, evaluate, compare, tune, benchmark, demo, train, infer.

Every set family (``segcp methods``) goes through the same commands; its own options
(``--se``, ``--encoder``, ``--K``…) come from the family's declared parameters
(:mod:`segcp.methods.base`), and every parameter can also be given as ``-p NAME=VALUE``.
Every closed choice (``--guarantee``, ``--curves``, ``--criterion``…) lists its values in the
help and in its error, taken from the one place that defines them (:class:`Choice`). Every
bad input ends with one line on stderr, ``segcp: error: <file or option>: <problem>``, and
exit status 2; result files are written atomically, so nothing partial is left behind.

Each command imports what it uses when it runs (``segcp --version`` and ``--help`` import
neither numpy nor the families).
"""

# No `from __future__ import annotations` here: typer reads every command's annotations when the
# app is built, and string annotations would be evaluated there again for all ten commands (17 ms
# of every start-up); evaluated once, at definition, they cost nothing more.
import contextlib
import copy
import difflib
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from segcp._version import __version__
from segcp.errors import SegcpError

try:  # typer vendors click since 0.2x; before, it ran on click itself
    from typer._click.exceptions import NoSuchOption
except ImportError:  # pragma: no cover
    from click.exceptions import NoSuchOption  # type: ignore[assignment]  # the same class, from click itself

if TYPE_CHECKING:
    from segcp.methods.base import Param

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------------- closed choices
class Choice:
    """A closed choice whose values are defined elsewhere, once: ``attribute`` of ``module`` (a
    sequence, a mapping's keys, or a function returning either).

    Used as an option's ``parser``: a value outside the choice is refused with click's own
    wording, ``Invalid value for '--curves': 'x' is not one of 'auto', 'exact', 'compact'.``;
    :class:`SegcpCommand` shows the values in the help. The module is imported only when the
    option is parsed or shown, so the choices of one command cost the others nothing.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self.module = module
        self.attribute = attribute

    def values(self) -> tuple[str, ...]:
        """The allowed values, in their defining order."""
        import importlib

        found = getattr(importlib.import_module(self.module), self.attribute)
        return tuple(str(v) for v in (found() if callable(found) else found))

    def __call__(self, value: str) -> str:
        return one_of(value, self.values())


def one_of(value: str, allowed: Sequence[str], option: str | None = None) -> str:
    """``value`` if it is one of ``allowed``, else click's error for a choice:
    ``Invalid value for '--se': 'disk' is not one of 'cross', 'square', 'ball'.``"""
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, allowed))}.", param_hint=None if option is None else f"'{option}'")
    return value


GUARANTEE = Choice("segcp.methods.base", "GUARANTEES")
CURVE_FORM = Choice("segcp.calibration.compact", "CURVE_FORMS")
CRITERION = Choice("segcp.specs", "CRITERIA")
METHOD = Choice("segcp.methods", "available_methods")
PRESET = Choice("segcp.harness.models.options", "PRESETS")
LOSS = Choice("segcp.harness.models.options", "LOSSES")
TASK = Choice("segcp.harness.datasets.tasks", "available_tasks")
SPLIT_PART = Choice("segcp.engine.splits", "PARTS")
RISK_LOSS = Choice("segcp.losses", "controlled_losses")
PVALUE = Choice("segcp.calibration.ltt", "PVALUES")


def _choice_of(param: Any) -> Choice | None:
    """The :class:`Choice` that parses a typer option, if any."""
    parser = getattr(getattr(getattr(param, "type_descriptor", None), "parameter_info", None), "parser", None)
    return parser if isinstance(parser, Choice) else None


class _PlainValue:
    """typer's conversion of an option's value, for the plain types segcp's options have, without pydantic.

    typer converts every option value through a pydantic ``TypeAdapter``: importing pydantic and
    building one adapter per option costs about 0.1 s of CPU per command, a sixth of ``segcp
    calibrate`` on 1000 images (docs/benchmarks/speed.md). segcp's options are ``str``, ``int``,
    ``float`` or ``Path`` values, one or repeated into a list, some with a minimum, some parsed by a
    :class:`Choice`; these are converted here as typer converts them, a bad value refused with
    click's wording (``Invalid value for '--n-cal': 'x' is not a valid integer.``). Any other
    option, and any typer without this hook, keeps typer's own conversion
    (``tests/test_cli.py::test_options_convert_as_typer_does`` compares the two).
    """

    KINDS: typing.ClassVar[dict[type, str]] = {str: "string", int: "integer", float: "number", Path: "path", bool: "boolean"}

    def __init__(self, kind: type, multiple: bool, low: float | None, parser: Any) -> None:
        self.kind, self.multiple, self.low, self.parser = kind, multiple, low, parser

    @classmethod
    def install(cls, param: Any) -> None:
        """Convert ``param``'s values with a :class:`_PlainValue` when its type is one of :attr:`KINDS`."""
        desc = getattr(param, "type_descriptor", None)
        info = getattr(desc, "parameter_info", None)
        if desc is None or info is None or getattr(param, "_runtime_param", False) is not None:
            return  # not typer's parameter, or its conversion is already chosen
        kind, multiple = desc.annotation, False
        if typing.get_origin(kind) is list:
            (kind,) = typing.get_args(kind)
            multiple = True
        if kind in cls.KINDS and multiple == bool(param.multiple) and param.nargs == 1 and info.max is None and desc.file_annotation is None:
            param._runtime_param = cls(kind, multiple, info.min, info.parser)

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if self.multiple else None
        if self.multiple:
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.parser is not None:
            # the option's own default is one of its values (tested): not parsed, so that a
            # Choice's module is imported only when the option is given (--pvalue's: Learn then Test)
            return value if value == param.default else self.parser(value)
        if self.kind in (str, Path):
            return self.kind(value)
        if self.kind is bool:  # a flag (--quiet, --help): click gives a bool
            if not isinstance(value, bool):
                raise typer.BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
            return value
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            number = None
            with contextlib.suppress(TypeError, ValueError):
                as_float = float(value)  # "1.0" is the integer 1, as typer has it
                if self.kind is int and as_float.is_integer():
                    number = int(as_float)
        if number is None:
            raise typer.BadParameter(f"{value!r} is not a valid {self.KINDS[self.kind]}.", ctx=ctx, param=param)
        if self.low is not None and number < self.low:
            raise typer.BadParameter(f"{number} is not in the range x>={self.low}.", ctx=ctx, param=param)
        return number


class SegcpCommand(TyperCommand):
    """A segcp command: its help shows the values of every closed choice (:class:`Choice`), and
    its options' values are converted without pydantic (:class:`_PlainValue`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for param in self.get_params(ctx):
            _PlainValue.install(param)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            choice = _choice_of(param)
            if choice is not None:  # "--curves <str>" -> "--curves <auto|exact|compact>"
                record = (f"{record[0].rpartition(' <')[0]} <{'|'.join(choice.values())}>", record[1])
            rows.append(record)
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)


class SegcpGroup(TyperGroup):
    """The ``segcp`` group: its own options (``--version``, ``--help``) converted as a
    :class:`SegcpCommand`'s."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for param in self.get_params(ctx):
            _PlainValue.install(param)
        return super().parse_args(ctx, args)


# ---------------------------------------------------------------------------- method options
@dataclass
class MethodFlag:
    """One CLI flag of the set families (``--se``): its parameter and declaration (the same in
    each family that declares it: :func:`method_flags`) and those families."""

    flag: str
    key: str
    decl: "Param"
    methods: list[str] = field(default_factory=list)


def method_flags() -> dict[str, MethodFlag]:
    """Every family's own CLI flag → its :class:`MethodFlag`, in registry order (imports every family).

    A flag declared by several families (``--normalize``: threshold and rwcp; ``--beta``: aps and
    consign) names the same parameter with the same meaning in each, or a one-line error says
    which declarations disagree.
    """
    from segcp.methods import available_methods, family_class

    out: dict[str, MethodFlag] = {}
    for name in available_methods():
        for key, decl in family_class(name).declared().items():
            if not decl.flag:
                continue
            known = out.setdefault(decl.flag, MethodFlag(decl.flag, key, decl))
            if (known.key, known.decl.help, known.decl.hint()) != (key, decl.help, decl.hint()):
                raise SegcpError(
                    f"{decl.flag}: {name} declares it for {key!r} ({decl.help}), {known.methods[0]} for "
                    f"{known.key!r} ({known.decl.help}): one flag, one meaning"
                )
            known.methods.append(name)
    return out


def _flag_owners(flag: str) -> list[str]:
    """The families that take ``flag`` (as their flag or as a deprecated spelling of one)."""
    from segcp.methods import available_methods, family_class

    return [m for m in available_methods() if any(flag == d.flag or flag in d.deprecated_flags for d in family_class(m).declared().values())]


class MethodCommand(SegcpCommand):
    """A command that also takes the chosen method's own options (``--se cross``, ``--K 5``),
    from the family's declared parameters: listed once each in its help, grouped by method.

    The method's options are read before the command's own are processed, so a mistyped option
    is reported first, as click reports one: ``No such option: --alpah (Possible options:
    --alpha)``, the suggestions drawn from the command's options and the chosen method's
    flags; a flag of another method says whose it is. The values land in
    ``ctx.meta[METHOD_OPTIONS]`` (parameter → value, parsed by :func:`segcp.specs.parse_value`).
    """

    METHOD_OPTIONS = "segcp.method_options"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            opts, rest, _ = self.make_parser(ctx).parse_args(args=list(args))
            method = opts.get("method")
            if method is None:
                method = next(p.default for p in self.params if p.name == "method")
            ctx.meta[self.METHOD_OPTIONS] = self._method_options(ctx, str(method), rest)
            self._warn_renamed(str(method), opts.get("param") or [])
        return super().parse_args(ctx, args)

    def _method_options(self, ctx: Any, method: str, rest: list[str]) -> dict[str, Any]:
        """The method's options among ``rest`` (what the command's parser did not take)."""
        from segcp.methods import available_methods, family_class
        from segcp.specs import parse_value

        if method not in available_methods():
            return {}  # the --method choice reports it
        decl = family_class(method).declared()
        flags = {d.flag: k for k, d in decl.items() if d.flag}
        old = {f: k for k, d in decl.items() for f in d.deprecated_flags}
        out: dict[str, Any] = {}
        i = 0
        while i < len(rest):
            token = rest[i]
            i += 1
            flag, eq, value = token.partition("=")
            if not flag.startswith("-") or flag == "-":
                ctx.fail(f"Got unexpected extra argument ({token})")
            if flag not in flags and flag not in old:
                self._unknown(ctx, method, flag, list(flags))
            if not eq:
                if i >= len(rest):
                    ctx.fail(f"Option '{flag}' requires an argument.")
                value = rest[i]
                i += 1
            key = flags.get(flag) or old[flag]
            if decl[key].kind == "choice":
                one_of(value, [str(c) for c in decl[key].choices], flag)
            if flag in old:
                new = decl[key].flag or f"-p {key}=VALUE"
                sys.stderr.write(f"segcp: warning: {flag} for {method} is deprecated; use {new} (or -p {key}=VALUE)\n")
            out[key] = parse_value(value)
        return out

    @staticmethod
    def _warn_renamed(method: str, params: list[str]) -> None:
        """One warning line per ``-p OLD=VALUE`` whose name the family renamed (its declared
        ``deprecated_names``, e.g. rwcp's ``beta`` → ``kernel_beta``); the value is still taken."""
        from segcp.methods import available_methods, family_class

        if method not in available_methods():
            return
        renamed = family_class(method).renamed_params()
        for item in params:
            name = str(item).partition("=")[0].strip()
            if name in renamed:
                sys.stderr.write(f"segcp: warning: -p {name} for {method} is deprecated; use -p {renamed[name]}=VALUE\n")

    def _unknown(self, ctx: Any, method: str, flag: str, flags: list[str]) -> None:
        """Refuse ``flag``: another method's flag says whose it is; anything else is click's
        ``No such option`` with the closest of the command's options and the method's flags."""
        close = difflib.get_close_matches(flag, flags)
        owners = _flag_owners(flag)
        if owners:
            also = f"; did you mean {' or '.join(close)}?" if close else ""
            ctx.fail(f"{flag}: not an option of --method {method} (an option of --method {', '.join(owners)}){also}")
        options = [o for p in self.get_params(ctx) if not getattr(p, "hidden", False) for o in p.opts if o.startswith("--")]
        raise NoSuchOption(flag, possibilities=difflib.get_close_matches(flag, options + flags), ctx=ctx)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        super().format_epilog(ctx, formatter)
        flags = list(method_flags().values())
        width = min(30, max(len(f"{f.flag} {f.decl.hint()}") for f in flags))  # one column for every group
        groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for f in flags:
            groups.setdefault(tuple(f.methods), []).append((f"{f.flag} {f.decl.hint()}".ljust(width), f"{f.decl.help} (-p {f.key}=...)"))
        with formatter.section("Method options (with their --method; each also as -p NAME=VALUE; `segcp methods` lists every parameter)"):
            for methods, rows in sorted(groups.items()):
                with formatter.section(", ".join(methods)):
                    formatter.write_dl(rows)


def _renamed(old: str, new: str, old_value: T | None, value: T | None, metavar: str = "N") -> T | None:
    """An option renamed from ``old`` to ``new``: the value given under either name, the old one
    with a one-line deprecation warning (both: an error)."""
    if old_value is None:
        return value
    sys.stderr.write(f"segcp: warning: {old} is deprecated; use {new} {metavar}\n")
    if value is not None:
        raise SegcpError(f"{old} (deprecated) and {new} say the same thing: give one of them ({new})")
    return old_value


# ---------------------------------------------------------------------------- the app
app = typer.Typer(
    name="segcp",
    cls=SegcpGroup,
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
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """segcp: conformal prediction sets for segmentation models."""


# ---------------------------------------------------------------------------- shared options
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data directory with probs/ or samples/, masks/ (and images/); or give the folders one by one.")
]
ProbsOpt = Annotated[
    Path | None, typer.Option("--probs", help="Folder of the model outputs (e.g. an nnU-Net prediction folder: <case>.npz + <case>.nii.gz).")
]
MasksOpt = Annotated[Path | None, typer.Option("--masks", help="Folder of the ground truth (e.g. nnU-Net's labelsTr).")]
ImagesOpt = Annotated[Path | None, typer.Option("--images", help="Folder of the images (image-aware methods).")]
SamplesOpt = Annotated[Path | None, typer.Option("--samples", help="Folder of sampled softmax maps (consign, aps).")]
MatchOpt = Annotated[
    list[str] | None, typer.Option("--match", help="KIND={id}SUFFIX: pair files by name, e.g. images={id}_0000 (nnU-Net) or probs={id}_prob (MONAI).")
]
DatasetJsonOpt = Annotated[Path | None, typer.Option("--dataset-json", help="nnU-Net dataset.json naming the labels (--labels by name).")]
# What a command accepts so that one set of data options serves calibrate, predict and evaluate,
# but does not read: accepted, and left out of its help.
UnreadMasksOpt = Annotated[Path | None, typer.Option("--masks", hidden=True, help="Not read by this command.")]
UnreadDatasetJsonOpt = Annotated[Path | None, typer.Option("--dataset-json", hidden=True, help="Not read by this command.")]


LabelOpt = Annotated[int | None, typer.Option("--label", help="Structure label L: mask == L (and channel L of class-probability stacks).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]
GroupsOpt = Annotated[
    str | None, typer.Option("--groups", help="Each image's group (one lambda per group): a CSV/TSV id,group or JSON file, or name:REGEX on the ids.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Run on N worker processes of this machine: a local Dask cluster with segcp[dask], else a process pool "
        "(same result; at most 4 per core). Default: this process.",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="Run on the existing Dask cluster at [tcp://]HOST:PORT (default: $DASK_SCHEDULER_ADDRESS, when set)."),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where RW-CP's encoder, kNN graph and diffusion run: cpu, cuda or auto (a run-time option, as -p device=...; "
        "never recorded in calib.json). Default: the method's (cpu).",
    ),
]
ChunkOpt = Annotated[int | None, typer.Option("--chunk-size", min=1, help="Images per task (default: about 8 tasks per worker, at most 64).")]
DrawSeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of the draws (a non-negative integer).")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="The engine's content-keyed cache folder: a rerun computes only what is new.")]
#: The defaults that the code applies when an option is not given (and the help shows).
CALIBRATE_ALPHA = 0.1
COMPARE_ALPHAS = (0.2, 0.1, 0.05)
COMPARE_METHODS = ("threshold", "morph:se=cross")


#: The options a command shares with the others, by name (:func:`shared_options` gives them to it).
DATA_OPTIONS: dict[str, Any] = {
    "data": DataOpt,
    "probs": ProbsOpt,
    "masks": MasksOpt,
    "images": ImagesOpt,
    "samples": SamplesOpt,
    "match": MatchOpt,
    "dataset_json": DatasetJsonOpt,
}
UNREAD_OPTIONS: dict[str, Any] = {"masks": UnreadMasksOpt, "dataset_json": UnreadDatasetJsonOpt}
MAP_OPTIONS: dict[str, Any] = {"workers": WorkersOpt, "scheduler": SchedulerOpt, "chunk_size": ChunkOpt}


@dataclass
class Inputs:
    """What a command's shared options say: its data (:meth:`source`), where its map step runs
    (:meth:`executor`) and whether it reports (``quiet``); a field is None when the command does
    not take that option."""

    quiet: bool = False
    workers: int | None = None
    scheduler: str | None = None
    chunk_size: int | None = None
    folders: dict[str, Any] = field(default_factory=dict)

    @property
    def given(self) -> bool:
        """Whether any data option was given."""
        return any(v for v in self.folders.values())

    def source(self) -> Any:
        """The inputs of the command: a data directory, or the folders given one by one (a DataSpec)."""
        from segcp.io.datadir import DataSpec

        f = self.folders
        patterns = {}
        for m in f.get("match") or []:
            kind, eq, template = m.partition("=")
            if not eq or not template:
                raise SegcpError(f"--match {m!r}: expected KIND={{id}}SUFFIX, e.g. images={{id}}_0000")
            patterns[kind.strip()] = template
        folders = {k: f.get(k) for k in ("probs", "masks", "images", "samples")}
        data, dataset_json = f.get("data"), f.get("dataset_json")
        if data is None and not any(folders.values()):
            raise SegcpError("give --data DIR, or the folders --probs/--samples and --masks (and --images)")
        if not patterns and not any(folders.values()) and dataset_json is None:
            return data
        return DataSpec.make(data, folders=folders, patterns=patterns, dataset_json=dataset_json)

    def take_n_jobs(self, params: dict[str, Any]) -> None:
        """``-p n_jobs=N`` (the old spelling of ``--workers N``): taken out of ``params`` with a
        one-line deprecation warning, as ``--workers`` (never a method parameter)."""
        if "n_jobs" not in params:
            return
        value = params.pop("n_jobs")
        if self.workers is not None:
            raise SegcpError("-p n_jobs (deprecated) and --workers say the same thing: give one of them (--workers)")
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise SegcpError(f"-p n_jobs: expected a positive integer (worker processes), got {value!r}")
        sys.stderr.write("segcp: warning: -p n_jobs=N is deprecated; use --workers N\n")
        from segcp.parallel import cores

        self.workers = cores() if value == -1 else max(1, value)

    def run(self, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``job(*args, **kwargs)`` on :meth:`executor`, with the command's progress and chunk size."""
        with self.executor() as ex:
            return job(*args, show_progress=not self.quiet, executor=ex, chunk_size=self.chunk_size, **kwargs)

    @contextmanager
    def executor(self) -> Iterator[Any]:
        """Where the job's map step runs (:func:`segcp.parallel.open_executor`); says so unless quiet."""
        from segcp.parallel import open_executor

        ex = open_executor(self.workers, self.scheduler)
        try:
            if ex.note:
                sys.stderr.write(f"segcp: note: {ex.note}\n")
            if not self.quiet and ex.where != "this process":
                sys.stderr.write(f"segcp: running on {ex.where}\n")
            yield ex
        finally:
            ex.close()


def shared_options(data: Sequence[str] = tuple(DATA_OPTIONS), unread: Sequence[str] = (), mapped: bool = True) -> Callable[[F], F]:
    """Give a command the options it shares with the others, written once here: the map options
    (``--workers``, ``--scheduler``, ``--chunk-size``; unless ``mapped`` is false), the ``data``
    options (those in ``unread`` accepted but not read, and hidden: one set of data options serves
    calibrate, predict and evaluate) and ``--quiet``. The command takes them as one ``inputs:
    Inputs`` parameter; typer sees them, after the command's own, through ``__signature__``."""
    options = {**(MAP_OPTIONS if mapped else {}), **{k: UNREAD_OPTIONS[k] if k in unread else DATA_OPTIONS[k] for k in data}, "quiet": QuietOpt}

    def decorate(command: F) -> F:
        sig = inspect.signature(command)
        own = [p for p in sig.parameters.values() if p.name != "inputs"]
        kw = inspect.Parameter.KEYWORD_ONLY
        shared = [inspect.Parameter(k, kw, annotation=a, default=False if k == "quiet" else None) for k, a in options.items()]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in options}
            maps = {k: given.pop(k) for k in MAP_OPTIONS if k in given}
            return command(**kwargs, inputs=Inputs(quiet=given.pop("quiet"), **maps, folders=given))

        params = [p.replace(kind=kw) for p in own] + shared
        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
        return typing.cast(F, run)

    return decorate


# ---------------------------------------------------------------------------- calibrate, predict, evaluate
@app.command(cls=MethodCommand, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@shared_options()
def calibrate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Where to write the calibration JSON.")],
    alpha: Annotated[
        list[float] | None, typer.Option("--alpha", help="Risk level in (0, 1) (repeat for several).", show_default=str(CALIBRATE_ALPHA))
    ] = None,
    method: Annotated[str, typer.Option("--method", "-m", parser=METHOD, help="Set method (`segcp methods` describes each).")] = "threshold",
    label: LabelOpt = None,
    guarantee: Annotated[
        str | None,
        typer.Option(
            "--guarantee",
            parser=GUARANTEE,
            help="fnr: E[FNR] <= alpha (risk control); quantile: P(coverage >= tau) >= 1 - alpha; "
            "contains (consign, aps): P(truth in the set up to beta) >= 1 - alpha; "
            "band (threshold, morph, rwcp): two-sided sets, P(inner in truth in outer) >= 1 - alpha (tau < 1: outer recall and "
            "inner precision >= tau), with volume intervals; band-risk: E[max(FNR(outer), |inner outside truth| / |truth|)] <= alpha.",
            show_default="the method's own",
        ),
    ] = None,
    tau: Annotated[float, typer.Option("--tau", help="Coverage ratio for --guarantee quantile (band: the tolerance).")] = 1.0,
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Every structure in one call: 'all', or labels by number or dataset.json name, e.g. 1,2,3 or RV,LV."),
    ] = None,
    allow_empty_masks: Annotated[
        bool,
        typer.Option(
            "--allow-empty-masks",
            help="Calibrate even when every mask is empty (the FNR is undefined there: lambda is its minimum and the risk 0 guarantees nothing).",
        ),
    ] = False,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable).")] = None,
    curves: Annotated[
        str,
        typer.Option(
            "--curves",
            parser=CURVE_FORM,
            help="auto: exact loss curves while they hold <= 2^26 breakpoints, else compact; exact; compact: the summed "
            "risk on a fixed lambda grid (memory independent of n; lambda at most one grid step above exact).",
        ),
    ] = "auto",
    grid_size: Annotated[int, typer.Option("--grid-size", help="Points of the compact curves' lambda grid.")] = 2**16,
    grid_max: Annotated[
        float | None, typer.Option("--grid-max", help="Compact grid: the largest lambda, for methods whose lambda is unbounded (morph ball: mm).")
    ] = None,
    device: DeviceOpt = None,
    loss: Annotated[
        list[str] | None,
        typer.Option(
            "--loss",
            parser=RISK_LOSS,
            help="Control this loss instead (repeat for several at once, one --alpha each; "
            "docs/ltt.md): monotone ones by exact CRC, the others (or any with --delta) by Learn then Test.",
        ),
    ] = None,
    loss_param: Annotated[
        list[str] | None, typer.Option("--loss-param", help="Loss parameter NAME=VALUE, e.g. min_overlap=0.5 (repeatable).")
    ] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="With --loss: Learn then Test, P(risk <= alpha) >= 1 - delta.")] = None,
    pvalue: Annotated[
        str, typer.Option("--pvalue", parser=PVALUE, help="Learn then Test's p-value: hb (Hoeffding-Bentkus) or wsr (betting).")
    ] = "hb",
    vary: Annotated[str | None, typer.Option("--vary", help="With several losses: NAME=V1|V2|... a second method parameter to choose.")] = None,
    groups: GroupsOpt = None,
    group_fallback: Annotated[
        bool, typer.Option("--group-fallback", help="A group too small for its own guarantee gets the marginal lambda (recorded).")
    ] = False,
    *,
    inputs: Inputs,
) -> None:
    """Calibrate a method on a labelled data directory and write calib.json."""
    from segcp.jobs import calibrate_dir
    from segcp.specs import parse_params

    params = parse_params(param) | ctx.meta[MethodCommand.METHOD_OPTIONS]
    if device is not None:
        params["device"] = device
    inputs.take_n_jobs(params)
    alphas = alpha or [CALIBRATE_ALPHA]
    _check_loss_options(loss, loss_param, delta, pvalue, vary, groups, group_fallback, guarantee, tau, curves)
    one = {
        "alpha": alphas[0] if len(alphas) == 1 else alphas,
        "method": method,
        "method_params": params,
        "label": label,
        "labels": labels,
        "out": out,
    }
    if loss:
        from segcp.jobs.risk import calibrate_risk_dir

        loss_args: dict[str, Any] = {"loss": loss[0] if len(loss) == 1 else list(loss), "loss_params": parse_params(loss_param, "--loss-param")}
        loss_args |= {"delta": delta, "pvalue": pvalue, "vary": _vary(vary), "groups": groups, "group_fallback": group_fallback}
        record = inputs.run(calibrate_risk_dir, inputs.source(), **one, **loss_args)
    else:
        curve_args = {"curve_form": curves, "grid_size": grid_size, "grid_max": grid_max}
        guarantee_args = {"guarantee": guarantee, "tau": tau, "allow_empty_masks": allow_empty_masks}
        record = inputs.run(calibrate_dir, inputs.source(), **one, **curve_args, **guarantee_args)
    if inputs.quiet:
        return
    if "losses" in record:
        for stmt in record["statement"]:
            typer.echo(f"{record['method']}: lambda = {record['lambda']:.6g} from n = {record['n']} images ({stmt}) -> {out}")
        for e in (record.get("groups") or {}).get("entries", []):
            how = "the marginal lambda (too few images for its own guarantee)" if e["fallback"] else f"lambda = {e['lambda']:.6g}"
            typer.echo(f"  group {e['group']}: n = {e['n']}, {how}")
        return
    for entry in record.get("structures", [record]):
        lams = entry["lambda"] if isinstance(entry["lambda"], list) else [entry["lambda"]]
        stmts = entry["statement"] if isinstance(entry["statement"], list) else [entry["statement"]]
        what = f" {entry['name']} (label {entry['label']})" if "name" in entry else ""
        for lam, stmt in zip(lams, stmts, strict=True):
            typer.echo(f"{record['method']}{what}: lambda = {lam:.6g} from n = {record['n']} images ({stmt}) -> {out}")
    first = record.get("structures", [record])[0]
    if "curves" in first:
        g = first["curves"]["grid"]
        step = (g["hi"] - g["lo"]) / (g["size"] - 1)
        typer.echo(
            f"compact curves: a {g['size']}-point grid over [{g['lo']:g}, {g['hi']:g}]; lambda is the first grid point "
            f"at or above the exact one (at most {step:.3g} larger)"
        )


def _check_loss_options(
    loss: list[str] | None,
    loss_param: list[str] | None,
    delta: float | None,
    pvalue: str,
    vary: str | None,
    groups: str | None,
    group_fallback: bool,
    guarantee: str | None,
    tau: float,
    curves: str,
) -> None:
    """The options of a chosen ``--loss`` go with one (and not with ``--guarantee``/``--tau``/compact curves)."""
    from segcp.errors import SegcpError

    if not loss:
        if loss_param or delta is not None or pvalue != "hb" or vary is not None or groups is not None or group_fallback:
            raise SegcpError("--loss-param, --delta, --pvalue, --vary, --groups and --group-fallback are for a chosen --loss (e.g. --loss fnr)")
        return
    if guarantee is not None or tau != 1.0:
        raise SegcpError("--loss replaces --guarantee and --tau: give one (--loss quantile --loss-param tau=...)")
    if curves == "compact":
        raise SegcpError("--loss is calibrated on exact step functions (--curves compact is for the FNR curves of --guarantee)")


def _vary(vary: str | None) -> tuple[str, list[Any]] | None:
    """``--vary NAME=V1|V2|...`` → (name, values)."""
    if vary is None:
        return None
    from segcp.specs import grid_values

    key, eq, raw = vary.partition("=")
    if not eq or not key.strip() or not raw:
        raise typer.BadParameter(f"{vary!r}: expected NAME=V1|V2|...", param_hint="'--vary'")
    return grid_values(key, raw)


RunParamOpt = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Run-time option or location NAME=VALUE, e.g. -p encoder=DIR -p threads=1.")
]


@app.command(cls=SegcpCommand)
@shared_options(unread=("masks", "dataset_json"))
def predict(
    calib: Annotated[Path, typer.Option("--calib", help="calib.json written by `segcp calibrate`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the sets, one <id>.npy per image.")],
    draws: Annotated[int, typer.Option("--draws", help="Sets of segmentations (consign, aps): segmentations drawn per image (S, *spatial).")] = 100,
    seed: DrawSeedOpt = 0,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="Which alpha of a calibration made at several.", show_default="the calibration's only one")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing, non-empty --out folder (whole).")] = False,
    combined: Annotated[
        bool, typer.Option("--combined", help="Per-structure calibrations: also one bit-coded file per case (out/combined/).")
    ] = False,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Per-structure calibrations: these structures only ('all', or labels by number or name, e.g. RV,LV).", show_default="all"
        ),
    ] = None,
    param: RunParamOpt = None,
    groups: GroupsOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Write each set into --out as it is made; a rerun skips the sets already there and whole.")
    ] = False,
    device: DeviceOpt = None,
    *,
    inputs: Inputs,
) -> None:
    """Write the calibrated prediction set of every image: a boolean mask (pixel sets) or
    --draws segmentations drawn from the set (sets of segmentations); two-sided sets (--guarantee band):
    inner/, outer/, band/ (0 outside, 1 possible, 2 certain; ITK-SNAP labels), slicer/*.seg.nrrd and volumes.csv."""
    from segcp.jobs import predict_dir
    from segcp.specs import parse_params

    overrides = parse_params(param)
    if device is not None:
        overrides["device"] = device
    inputs.take_n_jobs(overrides)
    written = inputs.run(
        predict_dir,
        calib,
        inputs.source(),
        out,
        draws=draws,
        seed=seed,
        alpha=alpha,
        overwrite=overwrite,
        overrides=overrides,
        combined=combined,
        resume=resume,
        labels=labels,
        groups=groups,
    )
    if not inputs.quiet:
        typer.echo(f"wrote {len(written)} sets to {out}")


@app.command(cls=SegcpCommand)
@shared_options(unread=("dataset_json",))
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="Where to write metrics JSON.")],
    sets: Annotated[Path | None, typer.Option("--sets", help="Folder of <id>.npy sets (from `segcp predict`).")] = None,
    label: LabelOpt = None,
    calib: Annotated[
        Path | None, typer.Option("--calib", help="Or: calib.json; the sets are made on the fly (sets of segmentations: drawn).")
    ] = None,
    draws: Annotated[int, typer.Option("--draws", help="Sets of segmentations: segmentations drawn per image.")] = 100,
    seed: DrawSeedOpt = 0,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="With --calib: run-time option or location NAME=VALUE.")] = None,
    groups: GroupsOpt = None,
    *,
    inputs: Inputs,
) -> None:
    """Coverage, FNR, stretch, Dice, HD95 and ASSD of sets against the masks (or, for sets of
    segmentations with --calib: coverage, SEC, Chao1 and correlation of drawn segmentations)."""
    from segcp.jobs import evaluate_dir
    from segcp.specs import parse_params

    overrides = parse_params(param)
    inputs.take_n_jobs(overrides)
    result = inputs.run(
        evaluate_dir, sets, inputs.source(), label=label, out=out, calib=calib, draws=draws, seed=seed, overrides=overrides, groups=groups
    )
    if inputs.quiet:
        return
    from segcp.report.tables import metrics_table

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
    for c in result.get("controlled", []):
        typer.echo(f"{c['loss']}: mean {c['mean']:.4f} (alpha {c['alpha']:g}; {c['statement']})")
    for g, st in result.get("groups", {}).items():
        typer.echo(
            f"  group {g} (lambda {st['lambda']:.6g}{', marginal' if st['fallback'] else ''}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in st["controlled"].items())
        )


@app.command(cls=SegcpCommand)
@shared_options(unread=("dataset_json",))
def monitor(
    calib: Annotated[Path, typer.Option("--calib", help="calib.json written by `segcp calibrate --loss ...`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the monitoring JSON.")] = None,
    figure: Annotated[Path | None, typer.Option("--figure", help="Where to write its figure (PNG): risk, martingale, two-sample p-values.")] = None,
    level: Annotated[float, typer.Option("--level", help="Type-I error of the exchangeability tests (martingale, two-sample).")] = 0.05,
    delta: Annotated[float, typer.Option("--delta", help="Error of the running risk's time-uniform confidence sequence.")] = 0.05,
    groups: GroupsOpt = None,
    param: RunParamOpt = None,
    *,
    inputs: Inputs,
) -> None:
    """Are new images still exchangeable with the calibration images (validity after deployment)? With masks:
    the running risk at lambda with a time-uniform bound and a conformal test martingale; always: a two-sample
    test of the sets' label-free statistics. Prints a verdict line (exit 0 also on an alarm)."""
    from segcp.jobs.risk import monitor_dir
    from segcp.specs import parse_params

    overrides = parse_params(param)
    inputs.take_n_jobs(overrides)
    result = inputs.run(monitor_dir, calib, inputs.source(), out=out, figure=figure, level=level, delta=delta, groups=groups, overrides=overrides)
    typer.echo(f"segcp monitor: {result['verdict']}" + (f" -> {out}" if out is not None else ""))


@app.command(cls=SegcpCommand)
@shared_options(data=("data", "masks", "images", "match", "dataset_json"), mapped=False)
def view(
    sets: Annotated[Path, typer.Option("--sets", help="Folder of sets from `segcp predict` (<id> files, or one folder per structure).")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (self-contained: open it in any browser).")],
    label: LabelOpt = None,
    calib: Annotated[Path | None, typer.Option("--calib", help="The calib.json that made per-structure sets (their labels).")] = None,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Largest file size, MiB: volumes are shown downsampled when they would not fit.")] = 32.0,
    title: Annotated[str | None, typer.Option("--title", help="The page's title.", show_default="segcp view: <sets folder>")] = None,
    *,
    inputs: Inputs,
) -> None:
    """One HTML file to look at sets: the image, the truth and each set (or band) on three planes,
    per-case volumes and metrics, the list of cases (no server, no network)."""
    from segcp.jobs.view import view_dir

    spec = inputs.source() if inputs.given else None
    info = view_dir(sets, out, spec, label=label, calib=calib, max_mb=max_mb, title=title, show_progress=not inputs.quiet)
    if not inputs.quiet:
        shown = "full resolution" if info["factor"] == 1 else f"downsampled {info['factor']}x"
        typer.echo(
            f"wrote {out}: {info['cases']} cases, {info['bytes'] / 2**20:.1f} MiB, {shown}, {info['seconds']:.1f} s"
            + (f" ({info['unused']} files of the data folders have no set)" if info["unused"] else "")
        )


@app.command(cls=SegcpCommand)
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


# ---------------------------------------------------------------------------- compare, tune, benchmark, demo
@app.command(cls=SegcpCommand)
@shared_options(unread=("dataset_json",))
def compare(
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, report.md and summary.png.")],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="NAME[:KEY=VALUE,...][@LABEL], repeatable; the first is the baseline. KEY=V1|V2 tunes KEY per split on the calibration images; "
            "loss=L[,delta=D,pvalue=hb|wsr] controls loss L (docs/ltt.md).",
            show_default=" ".join(COMPARE_METHODS),
        ),
    ] = None,
    alpha: Annotated[
        list[float] | None, typer.Option("--alpha", help="Risk levels (repeatable).", show_default=", ".join(map(str, COMPARE_ALPHAS)))
    ] = None,
    n_cal: Annotated[int, typer.Option("--n-cal", help="Calibration images per split (whole groups).")] = 20,
    splits: Annotated[int, typer.Option("--splits", help="Number of random calibration/test splits.")] = 20,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the splits.")] = 0,
    label: LabelOpt = None,
    title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
    cache: CacheOpt = None,
    *,
    inputs: Inputs,
) -> None:
    """Compare methods over repeated calibration/test splits of a labelled data directory.

    Groups (patients) come from segcp_export.json or groups.json in DIR; without them every
    image is its own group. The same engine and numbers as `segcp benchmark` (one task).
    """
    from segcp.compare import compare_dir, markdown_summary
    from segcp.specs import parse_spec

    specs = [parse_spec(m) for m in (method or COMPARE_METHODS)]
    result = inputs.run(
        compare_dir,
        inputs.source(),
        specs,
        label=label,
        alphas=alpha or list(COMPARE_ALPHAS),
        n_cal=n_cal,
        n_splits=splits,
        seed=seed,
        out=out,
        title=title,
        cache_dir=cache,
    )
    if not inputs.quiet:
        typer.echo(markdown_summary(result))
        typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'summary.png'}")


@app.command(cls=SegcpCommand)
@shared_options(unread=("dataset_json",))
def tune(
    method: Annotated[str, typer.Option("--method", "-m", parser=METHOD, help="Set method to tune (`segcp methods` describes each).")],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="KEY=V1|V2|... values to try (repeatable; the product is searched).")],
    alpha: Annotated[float, typer.Option("--alpha", help="Risk level the sets are calibrated at inside each fold.")] = 0.1,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Fixed KEY=VALUE method parameters.")] = None,
    criterion: Annotated[
        str,
        typer.Option(
            "--criterion",
            parser=CRITERION,
            help="What the held-out folds' sets are scored by: Dice (higher is better), HD95, stretch |C|/|Y_hat| or truth_ratio |C|/|Y| "
            "(lower is better).",
        ),
    ] = "dice",
    folds: Annotated[int, typer.Option("--folds", help="Group K-fold cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the fold assignment.")] = 0,
    label: LabelOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the CV table and the best params as JSON.")] = None,
    cache: CacheOpt = None,
    *,
    inputs: Inputs,
) -> None:
    """Choose a method's hyper-parameters on CALIBRATION data only (group K-fold CV).

    For each candidate, λ̂ is calibrated by exact CRC on K−1 folds (whole patients/groups) at
    --alpha and the sets are scored on the held-out fold; the best mean wins. Give it your
    calibration (or a separate tuning) directory, never test data; then `segcp calibrate` with
    the printed parameters. Tuning and calibrating on the same images makes the guarantee
    approximate (docs/tuning.md); for a strict one, tune on images you do not calibrate on.
    """
    from segcp.engine.cache import BenchmarkCache
    from segcp.engine.config import TaskConfig
    from segcp.engine.tasks import open_task
    from segcp.io import check_output, write_json
    from segcp.io.datadir import data_inputs, describe_data
    from segcp.specs import grid_candidates, grid_values, parse_params
    from segcp.tuning import tune_task

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
    source_data = inputs.source()
    if out is not None:
        check_output(out, data_inputs(source_data))
    task = open_task(TaskConfig(name="tune", data=Path(source_data) if isinstance(source_data, str) else source_data, label=label))
    res = inputs.run(
        tune_task, task, cands, alpha, criterion=criterion, folds=folds, seed=seed, cache=BenchmarkCache(cache) if cache is not None else None
    )
    view = task.view(cands[0])
    source = task.provenance.get("groups_from", "")
    n_groups = len(set(view.groups))
    record = res.to_dict() | {"data": describe_data(source_data), "groups_from": source, "n_images": len(view), "n_groups": n_groups}
    if out is not None:
        write_json(out, record)
    if not inputs.quiet:
        typer.echo(f"{len(view)} images in {n_groups} groups ({source}); {folds}-fold CV at alpha={alpha:g}, criterion {criterion}")
        if res.table and res.table[0]["alpha"] != alpha:
            typer.echo(f"(the training folds are too small for alpha={alpha:g}: CV at alpha={res.table[0]['alpha']:.3g}, the smallest they admit)")
        for row in res.table:
            mark = "*" if row["candidate"] == res.best_index else " "
            extra = f"  ({row['infeasible_folds']} infeasible folds)" if row["infeasible_folds"] else ""
            typer.echo(f"{mark} {row['label']:<40} {criterion} {row['value']:.4f}{extra}")
        typer.echo("best: " + " ".join(f"--param {k}={v}" for k, v in res.best.params.items()))
        if out is not None:
            typer.echo(f"wrote {out}")


BenchmarkCacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="The engine's content-keyed cache folder.", show_default="$SEGCP_CACHE/benchmark, else ~/.cache/segcp/benchmark"),
]


@app.command(cls=SegcpCommand)
@shared_options(data=())
def benchmark(
    config: Annotated[Path, typer.Option("--config", help="The benchmark's TOML file (tasks, methods, α, splits, ablations; docs/benchmark.md).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: report.html (self-contained), report.md, figures, results.json, results.csv.")],
    cache: BenchmarkCacheOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute everything; read and write no cache.")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", hidden=True, help="Deprecated spelling of --workers.")] = None,
    *,
    inputs: Inputs,
) -> None:
    """Run the papers' tables, ablations and figures on your data, cached by content.

    A second run recomputes only what is new (one more alpha, method or split). The report
    folder is replaced whole at the end; an existing folder must be a previous report.
    """
    from segcp.benchmark import run_benchmark

    if jobs is not None and jobs < 1:
        raise SegcpError(f"--jobs {jobs}: must be a positive integer")
    inputs.workers = _renamed("--jobs", "--workers", jobs, inputs.workers)
    result = inputs.run(run_benchmark, config, out, cache_dir=cache, use_cache=not no_cache)
    if not inputs.quiet:
        c = result["cache"]
        typer.echo(
            f"wrote {out / 'report.html'}, report.md, results.json, results.csv in {result['seconds']:.1f} s "
            f"(split records: {c['hits']['records']} from the cache, {c['misses']['records']} computed)"
        )


@app.command(cls=SegcpCommand)
def demo(
    out: Annotated[Path | None, typer.Option("--out", help="Report folder: report.html, report.md, figures, results.json, results.csv.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of synthetic images (half of them calibrate each split).")] = 200,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the phantoms and the splits.")] = 0,
    cache: BenchmarkCacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every method on built-in SYNTHETIC phantoms (segcp benchmark; no data needed)."""
    from segcp.demo import run_demo

    run_demo(out=out, n=n, seed=seed, show_progress=not quiet, cache_dir=cache)


# ---------------------------------------------------------------------------- the research harness: train, infer
SLICE_AXIS_DEFAULT = "(default: the coarsest spacing, ties -> fewest voxels)"


@app.command(cls=SegcpCommand)
def train(
    out: Annotated[Path, typer.Option("--out", help="Where to write the model checkpoint (.pt).")],
    task: Annotated[str | None, typer.Option("--task", parser=TASK, help="Task to train on: its training patients.")] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Or: a data directory with images/ and masks/ (2D images or 3D volumes: trained on their slices; "
            "all of it is training data; pre-split by patient).",
        ),
    ] = None,
    label: LabelOpt = None,
    preset: Annotated[
        str, typer.Option("--preset", parser=PRESET, help="cpu: <= 15 min on 2 cores; paper: 512 px, 200 epochs, GPU (docs/models.md).")
    ] = "cpu",
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: cpu preset = as many as make --train-steps).")] = None,
    train_steps: Annotated[
        int | None, typer.Option("--train-steps", help="Without --epochs: about this many optimisation steps (cpu preset: 1100).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", hidden=True, help="Deprecated spelling of --train-steps.")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Training size S (images resized to S x S, multiple of 16).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="UNet base width.")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Batch size.")] = None,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout p in the UNet blocks (MC dropout); 0 = none.")] = 0.0,
    dropout_levels: Annotated[
        int, typer.Option("--dropout-from-level", help="Dropout only in blocks at level >= K (2 = central blocks, 0 = all).")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Training seed (deep ensembles: one model per seed).")] = 0,
    split_seed: Annotated[int, typer.Option("--split-seed", min=0, help="Seed of the task's train/calibration/test split.")] = 0,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads (default: torch's choice).")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop after M minutes, keeping the best model so far.")] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Flips, small rotations, intensity jitter.")] = True,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of training patients/groups held out for model selection.")] = 0.1,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, cuda:1, ...")] = "cpu",
    loss: Annotated[str, typer.Option("--loss", parser=LOSS, help="ce: cross-entropy; dice_ce: nnU-Net's soft Dice + cross-entropy.")] = "ce",
    slice_axis: Annotated[
        int | None, typer.Option("--slice-axis", help=f"--data volumes: train on slices along this axis {SLICE_AXIS_DEFAULT}.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a UNet on a task's training patients or on a data directory (2D images, or the slices of 3D volumes).

    Research harness: needs torch (and h5py for the HDF5 tasks): pip install "segcp[harness]" after torch.
    """
    from segcp.harness.models import require_torch

    train_steps = _renamed("--steps", "--train-steps", steps, train_steps)
    require_torch("segcp train")
    from segcp.harness.models.train import TrainConfig, train_datadir, train_task

    if (task is None) == (data is None):
        raise SegcpError("train needs either --task T or --data DIR (not both)")
    if data is not None:
        from segcp.io import check_output
        from segcp.io.datadir import data_inputs

        check_output(out, data_inputs(data))
    if task is not None and label is not None:
        raise SegcpError("--label is for --data; a task defines its own target")
    if task is not None and slice_axis is not None:
        raise SegcpError("--slice-axis is for --data; a volume task defines its own slice axis")
    cfg = TrainConfig.from_preset(
        preset,
        epochs=epochs,
        steps=train_steps,
        size=size,
        width=width,
        batch_size=batch,
        dropout=dropout,
        dropout_from_level=dropout_levels,
        seed=seed,
        threads=threads,
        max_minutes=max_minutes,
        augment=augment,
        val_fraction=val_fraction,
        device=device,
        loss=loss,
    )
    if task is not None:
        meta = train_task(task, out, cfg, split_seed=split_seed, show_progress=not quiet)
    else:
        assert data is not None  # one of the two, checked above
        meta = train_datadir(data, out, cfg, label=label, show_progress=not quiet, slice_axis=slice_axis)
    if not quiet:
        m = meta["metrics"]
        vd = "n/a" if m["val_dice"] is None else f"{m['val_dice']:.4f}"
        typer.echo(
            f"trained {meta['n_classes']}-class UNet ({m['train_images']} images, best epoch {m['best_epoch']}, "
            f"validation Dice {vd}, {m['train_seconds'] / 60:.1f} min" + (", stopped at --max-minutes" if m["stopped_early"] else "") + f") -> {out}"
        )


@app.command(cls=SegcpCommand)
def infer(
    model: Annotated[list[Path], typer.Option("--model", help="Model checkpoint; repeat for a deep ensemble.")],
    out: Annotated[Path, typer.Option("--out", help="Output data directory (images/, masks/, probs/, samples/).")],
    task: Annotated[str | None, typer.Option("--task", parser=TASK, help="Task the model was trained on.")] = None,
    split: Annotated[
        str | None, typer.Option("--split", parser=SPLIT_PART, help="Which part of the model's split (pool = calibration + test).")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Or: a data directory with images/ (and masks/).")] = None,
    n_samples: Annotated[
        int | None, typer.Option("--n-samples", help="Write N softmax samples per image (MC dropout / ensemble members) into samples/.")
    ] = None,
    samples: Annotated[int | None, typer.Option("--samples", hidden=True, help="Deprecated spelling of --n-samples.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the MC-dropout masks.")] = 0,
    batch: Annotated[int, typer.Option("--batch", help="Images (or MC passes) per forward pass.")] = 16,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing, non-empty --out.")] = False,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, ...")] = "cpu",
    slice_axis: Annotated[
        int | None, typer.Option("--slice-axis", help=f"3D volumes: run the 2D model along this axis {SLICE_AXIS_DEFAULT}.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Probability maps (and samples) of one model or an ensemble, on the original image grid.

    3D images (volume tasks la2018 / acdc-3d, or NIfTI volumes in --data) are run slice by
    slice and written as volumes on the image's grid and header.

    Research harness: needs torch (and h5py for the HDF5 tasks): pip install "segcp[harness]" after torch.
    """
    from segcp.harness.models import require_torch

    n_samples = _renamed("--samples", "--n-samples", samples, n_samples)
    require_torch("segcp infer")
    from segcp.harness.models.infer import infer_to_dir

    if (task is None) == (data is None):
        raise SegcpError("infer needs either --task T --split PART or --data DIR (not both)")
    if task is not None and split is None:
        raise SegcpError("--task needs --split calibration|test|pool")
    if data is not None and split is not None:
        raise SegcpError("--split is for --task; a data directory is used whole")
    from segcp.io import check_output
    from segcp.io.datadir import data_inputs

    check_output(out, [*model, *(data_inputs(data) if data is not None else [])])
    man = infer_to_dir(
        [str(m) for m in model],
        out,
        task=task,
        split=split,
        data=data,
        samples=n_samples,
        seed=seed,
        batch_size=batch,
        threads=threads,
        device=device,
        overwrite=overwrite,
        show_progress=not quiet,
        slice_axis=slice_axis,
    )
    if not quiet:
        d = man["dice"]
        what = "probability volumes" if man.get("volumes") else "probability maps"
        msg = f"wrote {len(man['ids'])} {what}" + (f" and {n_samples} samples each" if n_samples else "") + f" to {out}"
        if d and d.get("mean") is not None:
            parts = [f"Dice {d['mean']:.4f} (n = {d['n']})"]
            if d.get("test") is not None:
                parts.append(f"test {d['test']:.4f} (n = {d['n_test']})")
            msg += "; " + ", ".join(parts)
        typer.echo(msg)


# ---------------------------------------------------------------------------- the entry point
class Stopped(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) turned into an exception that no library catches
    (typer turns KeyboardInterrupt into a silent exit 130), so that temporaries are removed
    on the way out and the user gets one line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signals segcp stops on cleanly, and the word it says for each (exit status 128 + number).
STOP_SIGNALS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up"}


def _on_signal(signum: int, frame: Any) -> None:
    raise Stopped(signum)


class OutputClosed(BaseException):
    """stdout was closed by its reader (``segcp methods | head -c1``): not caught by typer's own
    broken-pipe branch, which exits 1 without a word."""


class _PipeGuard:
    """stdout that raises :class:`OutputClosed` instead of ``BrokenPipeError``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise OutputClosed() from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _one_line(text: str) -> str:
    """One printable line: whitespace collapsed, control characters (terminal escapes) shown escaped."""
    flat = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and exit status 2 on bad input.

    Bad input (:class:`SegcpError`), a bad option (click's usage errors) and an operating-system
    error (a file that cannot be read or written) all end with one line on stderr,
    ``segcp: error: …``, and exit status 2; Ctrl-C (SIGINT) exits 130, SIGTERM 143 and SIGHUP
    129, each with one line, in every case after the temporaries of the run were removed; a
    closed stdout (``segcp methods | head -c1``) ends with one line and status 141.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            if hasattr(signal, name):  # SIGHUP: not on Windows
                signal.signal(getattr(signal, name), _on_signal)
    stdout = sys.stdout
    sys.stdout = _PipeGuard(stdout)
    try:
        _run(argv, stdout)
    finally:
        sys.stdout = stdout


def _command_line(argv: Sequence[str] | None) -> Any:
    """The click group of :data:`app` for one run (``argv``: the arguments, default ``sys.argv[1:]``).

    typer turns every command into click objects (each signature and its options read: 6 ms of
    every start for twelve commands) although a run invokes one: when the arguments begin with a
    command's name, only that command is built. Anything else — no command, the group's own
    options, a mistyped name (click's suggestion needs every name) — gets the whole group.
    """
    args = sys.argv[1:] if argv is None else argv
    named = [c for c in app.registered_commands if args and (c.name or typer.main.get_command_name(c.callback.__name__)) == args[0]]  # type: ignore[union-attr]
    if not named:
        return typer.main.get_command(app)
    one = copy.copy(app)
    one.registered_commands = named
    return typer.main.get_command(one)


def _run(argv: list[str] | None, stdout: Any) -> None:
    """:func:`main` once the signal handlers and the stdout guard are in place."""
    import os
    import signal

    try:
        code = _command_line(argv)(args=argv, prog_name="segcp", standalone_mode=False)
        sys.stdout.flush()
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
    except Stopped as stop:
        sys.stderr.write(f"segcp: {STOP_SIGNALS[signal.Signals(stop.signum).name]}\n")
        sys.exit(128 + stop.signum)
    except OutputClosed:
        # the reader of stdout went away: nothing more can be shown there (Python's advice:
        # point stdout at devnull so the interpreter's final flush stays quiet); say so once
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a stream without a file (tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        sys.stderr.write("segcp: stopped: the reader of the output closed it (broken pipe)\n")
        sys.exit(128 + 13)  # as a shell reports a process ended by SIGPIPE
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `segcp` alone: the help, as usual
            sys.stdout.write(exc.format_message() + "\n")
            sys.exit(0)
        # click's usage errors (unknown option, missing or malformed value): one line, not a usage block
        sys.stderr.write(f"segcp: error: {_one_line(exc.format_message())} (see segcp --help)\n")
        sys.exit(2)
    if code == 130:  # typer's own answer to an interrupt it caught (outside our handler)
        sys.stderr.write("segcp: interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


def console() -> None:
    """The ``segcp`` console script (and ``python -m segcp``): :func:`main` in a process that ends with it.

    Its last step moves every object still alive into the collector's permanent generation
    (:func:`gc.freeze`), so that the interpreter's final collections do not walk them: the
    objects of numpy's, typer's and segcp's modules (~34 000), walked two or three times at exit,
    cost 25 ms of every command (docs/benchmarks/speed.md). Nothing is lost: those objects live
    until the process ends, their memory goes back with it, and Python does not promise to call
    ``__del__`` of objects still alive at exit; temporaries are removed before :func:`main`
    returns. :func:`main` itself (tests, embedding) never freezes.
    """
    import gc

    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    console()
