"""Complete recipe validation: every key of every section, before anything runs.

:func:`check` runs inside :func:`densemed.config.from_dict`, after the sections are typed and
before anything is built or read. Every value of every section is checked for type, range and
allowed names; the first problem ends in one :class:`~densemed.errors.DensemedError` line naming
the recipe, the key, the value and what is allowed::

    configs/x.yaml: data.val_fraction: expected a number in [0, 1), got {'a': 1}
    --set: infer.blend: expected one of gaussian, constant, got 'gausian'; did you mean 'gaussian'?

What is checked, section by section:

* ``data``, ``train``, ``infer``: each key by a rule of :data:`RULES` (integers, finite numbers in
  a range, fractions, names with "did you mean", sizes with one entry per ``data.dims``), then the
  rules that tie keys together (``normalize: window`` needs ``window``; ``sgd`` needs a momentum
  in (0, 1); ``label_map`` classes below ``num_classes``; no stem in both ``train_files`` and
  ``val_files``). A key without a rule (a field added later) is checked against its dataclass
  annotation, so no key goes unchecked.
* ``task``: the name against the task registry; each option against the annotation of the task's
  ``Options`` dataclass; then the task's own :meth:`~densemed.tasks.Task.check`.
* ``model``: the name against the network registry and ``data.dims``; options against the
  builder's annotations; then the network is **built** on the meta device with weight
  initialisation skipped (shapes only: no memory, about 0.1 s for the largest preset), so every
  constructor complaint becomes a line naming ``model``; its parameter count is capped.
* ``loss``: built. ``augment``: built and applied to a tiny batch of ``data.dims`` dimensions
  (axes out of range surface only then).

Sanity caps (choices, not limits of the library; each message says which cap): a patch or window
of at most :data:`MAX_PATCH_VOXELS` voxels, a network of at most :data:`MAX_PARAMETERS`
parameters, ``train.threads`` at most :data:`MAX_THREADS`, seeds in ``[0, 2**63)`` (what numpy's
and torch's generators accept).

:func:`densemed.train.dry_run.dry_run` (``densemed train --check``) goes further: it builds the run
as training does and takes one step on a tiny batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from densemed.errors import DensemedError
from densemed.registry import closest

if TYPE_CHECKING:
    from densemed.config import Config

#: largest patch (or sliding window) accepted: 2**30 voxels is 4 GiB per channel in float32
MAX_PATCH_VOXELS = 2**30
#: largest network accepted: 2**31 parameters is 8 GiB of float32 weights (the largest preset has 2.5e8)
MAX_PARAMETERS = 2**31
#: more threads than this is a typo
MAX_THREADS = 1024
#: seeds go to numpy's SeedSequence (non-negative) and torch.manual_seed (64 bits)
MAX_SEED = 2**63

NORMALIZE = ("zscore", "percentile", "window", "none")
OPTIMIZERS = ("adam", "adamw", "sgd")
BLEND = ("gaussian", "constant")


class _Bad(Exception):
    """A value that does not fit a rule; ``args[0]`` says what is allowed."""


def show(value: Any, width: int = 80) -> str:
    """``repr(value)`` on one line, shortened to ``width`` characters."""
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- rules: each returns None or raises _Bad("<what is allowed>") ---------------------------------
Rule = Callable[[Any, "Config"], None]


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    """An integer (not a bool) in ``[lo, hi)``."""
    if lo is not None and hi is not None:
        what = f"an integer in [{lo}, {hi})" if hi - lo > 8 else f"an integer in {list(range(lo, hi))}"
    elif lo == 1:
        what = "a positive integer"
    elif lo is not None:
        what = f"an integer >= {lo}"
    else:
        what = "an integer"

    def rule(v: Any, cfg: Config) -> None:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v >= hi):
            raise _Bad(what)

    return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number (int or float, not a bool) between ``lo`` and ``hi``."""
    if lo == 0 and lo_open and hi is None:
        what = "a positive number"
    elif lo is not None and hi is not None:
        what = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        what = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        what = "a finite number"

    def rule(v: Any, cfg: Config) -> None:
        ok = _is_num(v) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo))
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            raise _Bad(what)

    return rule


def choice(options: Sequence[str] | Callable[[], Sequence[str]]) -> Rule:
    """One of ``options`` (a sequence, or a function giving it); a near miss gets "did you mean"."""

    def rule(v: Any, cfg: Config) -> None:
        opts = list(options() if callable(options) else options)
        if not isinstance(v, str) or v not in opts:
            hint = ""
            if isinstance(v, str):
                same = [o for o in opts if o.lower() == v.lower()]  # 'adamW' -> 'adamw', not 'adam'
                hint = f"; did you mean {same[0]!r}?" if same else closest(v, opts, cutoff=0.6)
            raise _Bad(f"one of {', '.join(opts)}", hint)

    return rule


def boolean(v: Any, cfg: Config) -> None:
    """``true`` or ``false``."""
    if not isinstance(v, bool):
        raise _Bad("true or false")


def amp_setting(v: Any, cfg: Config) -> None:
    """``true``, ``false``, ``auto`` (bf16 only on hardware with bf16 units), ``bf16`` or ``fp16``."""
    if not (isinstance(v, bool) or v in ("auto", "bf16", "fp16")):
        raise _Bad("true, false, auto, bf16 or fp16")


def string(v: Any, cfg: Config) -> None:
    """A non-empty string."""
    if not isinstance(v, str) or not v:
        raise _Bad("a non-empty string")


def any_string(v: Any, cfg: Config) -> None:
    """A string (may be empty)."""
    if not isinstance(v, str):
        raise _Bad("a string")


def optional(rule: Rule) -> Rule:
    """``null`` or a value that fits ``rule``."""

    def opt(v: Any, cfg: Config) -> None:
        if v is None:
            return
        try:
            rule(v, cfg)
        except _Bad as exc:
            raise _Bad(f"null or {exc.args[0]}", *exc.args[1:]) from None

    return opt


def sizes(key_dims: str = "data.dims") -> Rule:
    """One positive integer per spatial axis, at most :data:`MAX_PATCH_VOXELS` voxels in all."""

    def rule(v: Any, cfg: Config) -> None:
        d = cfg.data.dims
        what = f"a list of {d} positive integers (one per axis, {key_dims}={d})"
        if not isinstance(v, (list, tuple)) or len(v) != d or not all(_is_int(s) and s >= 1 for s in v):
            raise _Bad(what)
        if math.prod(v) > MAX_PATCH_VOXELS:
            raise _Bad(f"{what} of at most 2**30 voxels in all")

    return rule


def spacing(v: Any, cfg: Config) -> None:
    """One positive finite number per axis."""
    d = cfg.data.dims
    if not isinstance(v, (list, tuple)) or len(v) != d or not all(_is_num(s) and math.isfinite(s) and s > 0
                                                                  for s in v):
        raise _Bad(f"a list of {d} positive numbers (mm per axis; pixels for pictures without one; data.dims={d})")


def interval(lo: float | None = None, hi: float | None = None) -> Rule:
    """``[low, high]``: two finite numbers with ``low < high`` (inside ``[lo, hi]`` when given)."""
    where = f" inside [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""

    def rule(v: Any, cfg: Config) -> None:
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) and math.isfinite(x) for x in v)
        ok = ok and v[0] < v[1] and (lo is None or v[0] >= lo) and (hi is None or v[1] <= hi)
        if not ok:
            raise _Bad(f"[low, high] with low < high{where}")

    return rule


def stems(v: Any, cfg: Config) -> None:
    """``null`` or a list of file stems (strings)."""
    if v is not None and (not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v)):
        raise _Bad("null or a list of file stems (strings)")


def label_map(v: Any, cfg: Config) -> None:
    """``null`` or ``{raw value: class index}`` with classes in ``0..num_classes-1``."""
    k = cfg.data.num_classes
    what = f"null or a mapping raw label value -> class index in 0..{k - 1} (data.num_classes={k})"
    if v is None:
        return
    if not isinstance(v, Mapping) or not v:
        raise _Bad(what)
    for raw, cls in v.items():
        if not (_is_int(raw) or (isinstance(raw, str) and raw.strip().lstrip("-").isdigit())):
            raise _Bad(what)
        if not _is_int(cls) or not 0 <= cls < k:
            raise _Bad(what)


def class_names(v: Any, cfg: Config) -> None:
    """``null``, ``{class index: name}`` or a list of names in class order (``[background, ...]``)."""

    def is_name(n: Any) -> bool:
        return isinstance(n, (str, int, float)) and not isinstance(n, bool)

    ok = v is None or (isinstance(v, Mapping) and all(
        (_is_int(k) or (isinstance(k, str) and k.strip().isdigit())) and is_name(n) for k, n in v.items())) or (
        isinstance(v, (list, tuple)) and all(is_name(n) for n in v))
    if not ok:
        raise _Bad("null, a mapping class index -> name, or a list of names in class order")


def synthetic(v: Any, cfg: Config) -> None:
    """``null`` or options of :func:`densemed.data.synthetic.make_dataset` (n >= 1, size >= 8, seed)."""
    what = "null or a mapping with n (>= 1 images), size (>= 8 pixels) and seed (>= 0)"
    if v is None:
        return
    if not isinstance(v, Mapping):
        raise _Bad(what)
    limits = {"n": 1, "size": 8, "seed": 0}
    for key, value in v.items():
        if key not in limits:
            raise _Bad(what, closest(str(key), list(limits)))
        if not _is_int(value) or value < limits[key] or value >= MAX_SEED:
            raise _Bad(what)
    if cfg.data.dims != 2:
        raise _Bad(f"{what}; generated cells are 2D (data.dims=2)")


def device(v: Any, cfg: Config) -> None:
    """``auto`` or a device torch understands (its availability is checked when training starts)."""
    what = "auto, cpu, cuda, cuda:N or mps"
    if not isinstance(v, str) or not v:
        raise _Bad(what)
    if v == "auto":
        return
    import torch

    try:
        torch.device(v)
    except (RuntimeError, TypeError, ValueError):
        raise _Bad(what) from None


def axes(v: Any, cfg: Config) -> None:
    """``null`` or distinct spatial axes ``0..dims-1``."""
    d = cfg.data.dims
    ok = v is None or (isinstance(v, (list, tuple)) and all(_is_int(a) and 0 <= a < d for a in v)
                       and len(set(v)) == len(v))
    if not ok:
        raise _Bad(f"null or a list of distinct axes in 0..{d - 1} (data.dims={d})")


def _layouts() -> Sequence[str]:
    from densemed import config

    return getattr(config, "LAYOUTS", ("auto",))


def _schedules() -> Sequence[str]:
    from densemed.train.schedule import SCHEDULES

    return SCHEDULES


#: ``section.key`` -> rule; keys of the typed sections without an entry are checked by annotation
RULES: dict[str, Rule] = {
    "data.root": any_string,
    "data.dims": integer(2, 4),
    "data.layout": choice(_layouts),
    "data.image_dir": string,
    "data.label_dir": string,
    "data.label_map": label_map,
    "data.num_classes": integer(1),
    "data.in_channels": optional(integer(1)),
    "data.patch_size": sizes(),
    "data.foreground_fraction": number(0, 1),
    "data.normalize": choice(NORMALIZE),
    "data.window": optional(interval()),
    "data.percentiles": interval(0, 100),
    "data.target_spacing": optional(spacing),
    "data.val_fraction": number(0, 1, hi_open=True),
    "data.split_seed": integer(0, MAX_SEED),
    "data.train_files": stems,
    "data.val_files": stems,
    "data.batch_size": integer(1),
    "data.samples_per_epoch": integer(1),
    "data.val_patches_per_image": integer(1),
    "data.num_workers": integer(0),
    "data.synthetic": synthetic,
    "data.class_names": class_names,
    "data.cache_dir": optional(string),
    "data.cache_mb": number(0, lo_open=True),
    "train.epochs": integer(1),
    "train.lr": number(0),  # 0 freezes the weights (tests, evaluation runs)
    "train.optimizer": choice(OPTIMIZERS),
    "train.momentum": number(0, 1, hi_open=True),
    "train.weight_decay": number(0),
    "train.scheduler": choice(_schedules),
    "train.seed": integer(0, MAX_SEED),
    "train.device": device,
    "train.time_budget_s": optional(number(0, lo_open=True)),
    "train.out": string,
    "train.amp": amp_setting,
    "train.channels_last": boolean,
    "train.threads": optional(integer(1, MAX_THREADS + 1)),
    "train.grad_clip": optional(number(0, lo_open=True)),
    "train.val_every": integer(1),
    "train.val_share": optional(number(0, 1, lo_open=True)),
    "train.progress": boolean,
    "train.accumulate": integer(1),
    "infer.overlap": number(0, 1, hi_open=True),
    "infer.tta": boolean,
    "infer.amp": amp_setting,
    "infer.sw_batch_size": integer(1),
    "infer.window": optional(sizes()),
    "infer.blend": choice(BLEND),
    "infer.tta_axes": axes,
}


# -- annotations: the fallback for keys without a rule, and options of tasks and builders ---------
def fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as read from YAML) fits the type annotation ``tp``; unknown constructs fit."""
    if tp is Any or tp is object:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_num(value) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(fits(v, item) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            return False
        kt, vt = args if len(args) == 2 else (Any, Any)
        # YAML and JSON give mapping keys as strings as often as numbers: "0" fits int
        return all((fits(k, kt) or (kt is int and isinstance(k, str) and k.strip().lstrip("-").isdigit()))
                   and fits(v, vt) for k, v in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def describe(tp: Any) -> str:
    """What an annotation allows, in words."""
    if tp is Any or tp is object:
        return "anything"
    if tp is type(None) or tp is None:
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        rest = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(rest)
        return f"null or {text}" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if tp in names:
        return names[tp]
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        return f"a list of {_plural(args[0])}" if args and args[-1] is not Ellipsis else "a list"
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if len(args) == 2 and args != (str, Any):
            return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    """``integers``, ``numbers``, ``mappings`` ...: an annotation as the items of a list."""
    plain = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if tp in plain:
        return plain[tp]
    origin = typing.get_origin(tp)
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        return "mappings"
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        return "lists"
    return "values"


def _hints(obj: Any) -> dict[str, Any]:
    """Evaluated annotations of a function or class ({} when they cannot be evaluated)."""
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation naming something its module does not import: not checked
        return {}


def _raise(source: str, key: str, value: Any, what: str, hint: str = "") -> None:
    raise DensemedError(f"{source}: {key}: expected {what}, got {show(value)}{hint}")


# -- the check --------------------------------------------------------------------------------------
def check(cfg: Config, source: str = "recipe") -> None:
    """Validate a whole recipe; the first problem raises one :class:`DensemedError` line.

    Example:
        >>> from densemed import config
        >>> try:
        ...     config.load(None, ["data.val_fraction={a: 1}"])
        ... except DensemedError as exc:
        ...     print(exc)
        --set: data.val_fraction: expected a number in [0, 1), got {'a': 1}
    """
    # data.dims and data.num_classes first: the rules of other keys read them
    for key in FIRST:
        section, name = key.split(".")
        _check_key(cfg, key, getattr(getattr(cfg, section), name), source)
    for name in ("data", "train", "infer"):
        _check_section(getattr(cfg, name), name, cfg, source)
    _check_links(cfg, source)
    task = _check_task(cfg, source)
    _check_model(cfg, task, source)
    _check_loss(cfg, source)
    _check_augment(cfg, task, source)


#: keys checked before the others, whose rules read them
FIRST = ("data.dims", "data.num_classes")


def _check_key(cfg: Config, key: str, value: Any, source: str) -> None:
    try:
        RULES[key](value, cfg)
    except _Bad as exc:
        _raise(source, key, value, *exc.args)


def _check_section(section: Any, name: str, cfg: Config, source: str) -> None:
    hints = _hints(type(section))
    for f in dataclasses.fields(section):
        key, value = f"{name}.{f.name}", getattr(section, f.name)
        if key in RULES:
            _check_key(cfg, key, value, source)
        elif f.name in hints and not fits(value, hints[f.name]):
            _raise(source, key, value, describe(hints[f.name]))


def _check_links(cfg: Config, source: str) -> None:
    """Rules that tie keys together."""
    d, t = cfg.data, cfg.train
    if d.normalize == "window" and d.window is None:
        raise DensemedError(f"{source}: data.window: data.normalize is 'window', which needs data.window: [lo, hi] "
                            "(e.g. [-100, 240] Hounsfield units)")
    if t.optimizer == "sgd" and t.momentum == 0:
        raise DensemedError(f"{source}: train.momentum: expected a number in (0, 1) for Nesterov SGD "
                            f"(train.optimizer=sgd), got {show(t.momentum)}")
    both = sorted(set(d.train_files or []) & set(d.val_files or []))
    if both:
        raise DensemedError(f"{source}: data.val_files: stems {both[:5]} are also in data.train_files "
                            "(validation images must not be trained on)")


def _check_task(cfg: Config, source: str) -> Any:
    """The task's name and options (by its ``Options`` annotations), then its own check."""
    from densemed import tasks

    name = cfg.task.get("name")
    if not isinstance(name, str):
        _raise(source, "task.name", name, f"one of {', '.join(tasks.names())}")
    try:
        cls = tasks.get(name)
    except DensemedError as exc:
        raise DensemedError(f"{source}: {exc}") from None
    opts = getattr(cls, "Options", None)
    if opts is not None and dataclasses.is_dataclass(opts):
        hints = _hints(opts)
        fields = [f.name for f in dataclasses.fields(opts)]
        for key, value in cfg.task.items():
            if key == "name":
                continue
            if key not in fields:
                raise DensemedError(f"{source}: unknown config key 'task.{key}'{closest(str(key), fields, 0.5)}")
            if key in hints and not fits(value, hints[key]):
                _raise(source, f"task.{key}", value, describe(hints[key]))
    return guard("task", lambda: tasks.build(cfg, source), source, f"cannot set up task {name!r}")


def guard(key: str, fn: Callable[[], Any], source: str, what: str) -> Any:
    """Run a builder; its complaint, of whatever type, becomes one line naming ``key``."""
    try:
        return fn()
    except DensemedError as exc:
        text = str(exc)
        raise DensemedError(text if text.startswith(f"{source}:") else f"{source}: {text}") from None
    except Exception as exc:  # constructors raise TypeError, ValueError, IndexError, ...: all are the recipe's
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DensemedError(f"{source}: {key}: {what}: {type(exc).__name__}: {first}"[:400]) from None


def _check_options(key: str, fn: Callable[..., Any], options: Mapping[str, Any], source: str,
                   skip: Sequence[str] = ()) -> None:
    """Options of a builder against its parameters' annotations (names are checked by building)."""
    hints = _hints(fn)
    for opt, value in options.items():
        if opt in hints and opt not in skip and not fits(value, hints[opt]):
            _raise(source, f"{key}.{opt}", value, describe(hints[opt]))


_MODEL_CACHE: dict[str, int] = {}


def _check_model(cfg: Config, task: Any, source: str) -> None:
    """Build the network on the meta device (shapes only) and cap its size."""
    from densemed import nets

    name = cfg.model.get("name")
    if not isinstance(name, str):
        _raise(source, "model.name", name, "a registered network name (see `densemed models`)")
    entry = guard("model", lambda: nets.info(name), source, f"cannot find network {name!r}")
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    _check_options("model", entry.builder, options, source)
    in_channels = options.get("in_channels", cfg.data.in_channels or 1)
    out_channels = guard("task", task.out_channels, source, "cannot give the network's output channels")
    key = json.dumps([cfg.model, cfg.data.dims, in_channels, out_channels], sort_keys=True, default=repr)
    count = _MODEL_CACHE.get(key)
    if count is None:
        net = guard("model", lambda: meta_network(cfg.model, cfg.data.dims, in_channels, out_channels), source,
                    f"cannot build network {name!r} with {show(options, 120)}")
        count = sum(p.numel() for p in net.parameters())
        del net
        if len(_MODEL_CACHE) > 256:
            _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = count
    if count > MAX_PARAMETERS:
        raise DensemedError(f"{source}: model: {name!r} with {show(options, 120)} has {count:.3g} parameters, "
                            f"more than the cap of 2**31 ({MAX_PARAMETERS * 4 / 2**30:.0f} GiB of float32 weights); "
                            "check its width and depth options")


def meta_network(spec: dict[str, Any], dims: int, in_channels: int, out_channels: int | None) -> Any:
    """The recipe's network built on the meta device without initialising weights (shapes only).

    Weight initialisation (``normal_``, ``uniform_``, ``copy_`` ...) is skipped: on the meta device it
    means nothing, and ``normal_`` there would import torch's compiler stack (6 s). A constructor that
    needs real values (``.item()``) is retried on the CPU.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    from densemed.build import build_network

    t = torch.Tensor
    skipped = {t.normal_, t.uniform_, t.fill_, t.zero_, t.copy_, t.bernoulli_, t.exponential_, t.random_,
               t.log_normal_, t.cauchy_, t.geometric_, torch.nn.init.trunc_normal_, torch.nn.init.orthogonal_}

    class NoInit(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in skipped:
                return args[0]
            return func(*args, **(kwargs or {}))

    try:
        with torch.device("meta"), NoInit():
            return build_network(spec, dims, in_channels, out_channels)
    except (NotImplementedError, RuntimeError) as exc:
        if "meta" not in str(exc):
            raise
    return build_network(spec, dims, in_channels, out_channels)


def _check_loss(cfg: Config, source: str) -> None:
    from densemed import losses
    from densemed.losses import registry as loss_registry

    name = cfg.loss.get("name")
    if not isinstance(name, str):
        _raise(source, "loss.name", name, f"one of {', '.join(losses.names())}")
    cls = guard("loss", lambda: loss_registry._REGISTRY.get(name), source, f"cannot find loss {name!r}")
    options = {k: v for k, v in cfg.loss.items() if k != "name"}
    _check_options("loss", cls.__init__, options, source)
    guard("loss", lambda: losses.build(name, **options), source,
          f"cannot build loss {name!r} with {show(options, 120)}")


def _check_augment(cfg: Config, task: Any, source: str) -> None:
    """Build the augmentation and run it on a tiny batch (axes and sizes are checked per batch)."""
    if cfg.augment is None:
        return
    import torch

    from densemed import augment

    aug = guard("augment", lambda: augment.build(cfg.augment), source, "cannot build the augmentation")
    size = (12,) * cfg.data.dims
    batch = {"image": torch.zeros(2, 1, *size), "label": torch.zeros(2, 1, *size, dtype=torch.long)}
    nearest = guard("task", task.nearest_keys, source, "cannot list the task's nearest-neighbour keys")
    guard("augment", lambda: aug(batch, generator=torch.Generator().manual_seed(0), nearest=nearest), source,
          f"the augmentation {show(cfg.augment, 120)} fails on a batch of {cfg.data.dims}D images")
