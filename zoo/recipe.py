"""Recipe schema: typed sections, YAML load, dotted overrides, atomic save.

A recipe is one flat YAML file (no inheritance between files) with sections
``model``, ``data``, ``train``, ``eval`` and ``log``. ``model`` is free-form, as
it goes straight into ``zoo.create(**model)``, and is checked against the
builder's keyword parameters; the other sections are small dataclasses.
Unknown keys, wrong types and values outside a field's ``choices`` are refused
with a one-line message that names the recipe file and the key path.
"""
import contextlib
import copy
import dataclasses
import difflib
import importlib
import inspect
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from zoo.fileio import atomic_write_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTO_ON_OFF = ("auto", "on", "off")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the key path."""


def _choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


def _pair(default=None):
    return field(default=default, metadata={"length": 2})


def _list(values, length=None):
    meta = {"length": length} if length else {}
    return field(default_factory=lambda: list(values), metadata=meta)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # voc | cityscapes | camvid | coco | folder | synthetic
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 8
    num_workers: int = 2
    crop_size: list[int] | None = _pair()  # [h, w]
    mean: list[float] = _list(IMAGENET_MEAN)
    std: list[float] = _list(IMAGENET_STD)
    train_transforms: list[dict] | None = None  # [{name, params}] albumentations entries
    val_transforms: list[dict] | None = None
    options: dict = field(default_factory=dict)  # dataset-specific keyword arguments
    pin_memory: bool = True
    persistent_workers: bool = True


@dataclass
class TrainConfig:
    iters: int = 1000
    seed: int = 0
    device: str = field(default="auto", metadata={"pattern": r"auto|cpu|cuda(:\d+)?",
                                                  "allowed": "auto, cpu, cuda or cuda:N"})
    optimizer: str = _choice("sgd", ("sgd", "adamw"))
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: list[float] = _list((0.9, 0.999), length=2)
    schedule: str = _choice("poly", ("poly", "cosine", "constant"))
    power: float = 0.9
    warmup_iters: int = 0
    min_lr_ratio: float = 0.0
    encoder_lr_mult: float = 1.0
    loss: str = "ce"
    aux_weight: float = 0.0
    # A list of per-class weights, or the name of a rule that computes them.
    class_weights: list[float] | str | None = _choice(None, ("median_frequency",))
    amp: str = _choice("auto", ("auto", "off", "bf16", "fp16"))
    channels_last: str = _choice("auto", AUTO_ON_OFF)
    compile: str = _choice("auto", AUTO_ON_OFF)
    grad_clip: float | None = None
    deterministic: bool = False
    sync_bn: bool = False
    log_interval: int = 20
    checkpoint_interval: int = 200


@dataclass
class EvalConfig:
    interval: int = 500
    mode: str = _choice("whole", ("whole", "slide"))
    crop_size: list[int] | None = _pair()  # slide window [h, w]
    stride: list[int] | None = _pair()
    scales: list[float] = _list((1.0,))
    flip: bool = False
    batch_size: int = 1
    max_images: int | None = None


@dataclass
class LogConfig:
    wandb: bool = False
    project: str = "zoo"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    num_images: int = 4  # prediction overlays to save / log


@dataclass
class Recipe:
    model: dict  # zoo.create(**model); must contain "name"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


# PyYAML follows YAML 1.1: `1e-3` (no dot) is a string and `on`/`off`/`yes`/`no` are
# bools, so `compile: off` would arrive as False. Read scalars as YAML 1.2 does instead.
_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _Dumper(yaml.SafeDumper):  # quotes `1e3` strings too; still quotes `on` for YAML 1.1 readers
    pass


_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(_FLOAT, _EXP_FLOAT, list("-+.0123456789"))


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _describe(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _type_name(tp) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if tp is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _join(parent: str, key) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _type_error(path, tp, value) -> RecipeError:
    return RecipeError(f"key '{path}': expected {_type_name(tp)}, got {_describe(value)}")


def _unknown(parent: str, key, allowed: list[str]) -> RecipeError:
    close = difflib.get_close_matches(str(key), allowed, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(_join(parent, c)) for c in close)}?)" if close else ""
    what = f"key '{_join(parent, key)}'" if parent else f"section '{key}'"
    order = close + [a for a in allowed if a not in close]
    return RecipeError(f"unknown {what}{hint}; allowed: {', '.join(order)}")


def _coerce(value, tp, path: str):
    """Check `value` against the annotation `tp`; return it converted (int -> float, copies)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:  # a container member takes a container, so element errors keep their path
            kind = get_origin(a) or a
            if (kind in (list, tuple, Sequence) and isinstance(value, (list, tuple))
                    or kind is dict and isinstance(value, dict)):
                return _coerce(value, a, path)
        for a in args:
            with contextlib.suppress(RecipeError):
                return _coerce(value, a, path)
        raise _type_error(path, tp, value)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise RecipeError(f"key '{path}': expected one of {', '.join(map(str, args))}, "
                          f"got {_describe(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if (origin or tp) in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, tp, value)
        elems = [args[0] if args else Any] * len(value)
        if (origin or tp) is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise RecipeError(f"key '{path}': expected {len(args)} values, got {len(value)}")
            elems = list(args)
        out = [_coerce(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, elems))]
        return tuple(out) if (origin or tp) is tuple else out
    if (origin or tp) is dict:
        if not isinstance(value, dict):
            raise _type_error(path, tp, value)
        return copy.deepcopy(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise _type_error(path, tp, value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(path, tp, value)


def _convert_field(value, tp, meta, path: str):
    """One dataclass field: choices first, so `compile: true` is answered with the choices."""
    choices, length, pattern = meta.get("choices"), meta.get("length"), meta.get("pattern")
    if choices and (isinstance(value, str) or tp is str) and value not in choices:
        raise RecipeError(f"key '{path}': expected one of {', '.join(choices)}, "
                          f"got {_describe(value)}")
    value = _coerce(value, tp, path)
    if length and value is not None and len(value) != length:
        raise RecipeError(f"key '{path}': expected {length} values, got {len(value)}")
    if pattern and not re.fullmatch(pattern, value):
        raise RecipeError(f"key '{path}': expected {meta['allowed']}, got {value!r}")
    return value


def _build(cls, raw, path: str):
    if not isinstance(raw, dict):
        raise _type_error(path, cls, raw)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise _unknown(path, key, list(fields))
        kwargs[key] = _convert_field(value, hints[key], fields[key].metadata, _join(path, key))
    return cls(**kwargs)


_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None),
           "NoneType": type(None), "Any": Any, "dict": dict}


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def _parse_annotation(text: str):
    """Simple string annotations (`from __future__ import annotations`) to types, else None."""
    text = re.sub(r"\b(typing|collections\.abc)\.", "", text.strip())
    if m := re.fullmatch(r"Optional\[(.*)\]", text):
        text = f"{m[1]} | None"
    if len(parts := _split_top(text, "|")) == 1 and (m := re.fullmatch(r"Union\[(.*)\]", text)):
        parts = _split_top(m[1], ",")
    if len(parts) > 1:
        members = [_parse_annotation(p) for p in parts]
        return None if None in members else Union[tuple(members)]
    if m := re.fullmatch(r"(list|List|Sequence|tuple|Tuple)\[(.*)\]", text):
        args = _split_top(m[2], ",")
        elems = [_parse_annotation(a) for a in args if a != "..."]
        if None in elems or not elems:
            return None
        if m[1] in ("list", "List", "Sequence"):
            return list[elems[0]]
        return tuple[elems[0], ...] if args[-1] == "..." else tuple[tuple(elems)]
    return _SIMPLE.get(text)


def _is_simple(tp) -> bool:
    if tp in (int, float, str, bool, type(None), Any, list, tuple, dict):
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return True
    return origin in (Union, types.UnionType, list, tuple, dict, Sequence) and all(
        _is_simple(a) for a in get_args(tp) if a is not Ellipsis)


def _keyword_params(params) -> dict:
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p for k, p in params.items() if p.kind in keyword}


def validate_model(model: dict) -> None:
    """Check `model` against what `zoo.create` takes: its own keywords (`pretrained`) and
    the builder's keyword parameters; values against their simple annotations."""
    if not isinstance(model, dict):
        raise _type_error("model", dict, model)
    name = model.get("name")
    if name is None:
        raise RecipeError("key 'model.name': required (a registered model name)")
    if not isinstance(name, str):
        raise _type_error("model.name", str, name)
    registry = importlib.import_module("zoo.registry")  # imports torch: only when asked
    try:
        registry.resolve_name(name)
        builder = registry.builder_params(name)
    except ValueError as e:
        raise RecipeError(f"key 'model.name': {_one_line(e)}") from None
    create = getattr(registry, "create", None)
    params = _keyword_params(inspect.signature(create).parameters) if create else {}
    params.pop("name", None)
    params.update(_keyword_params(builder))
    open_ended = any(p.kind is p.VAR_KEYWORD for p in builder.values())
    for key, value in model.items():
        if key == "name" or value is None or (key not in params and open_ended):
            continue  # zoo.create drops None keywords: unset keeps the builder's default
        if key not in params:
            raise _unknown("model", key, ["name", *params])
        p = params[key]
        tp = _parse_annotation(p.annotation) if isinstance(p.annotation, str) else p.annotation
        if tp is not None and _is_simple(tp):  # an nn.Module or callable annotation: unchecked
            _coerce(value, tp, f"model.{key}")


def recipe_from_dict(d: dict, source: str = "<dict>") -> Recipe:
    try:
        if not isinstance(d, dict):
            raise RecipeError(f"expected a mapping of sections, got {_describe(d)}")
        recipe = _build(Recipe, {"model": {}, **d}, "")
        validate_model(recipe.model)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None
    return recipe


def recipe_to_dict(r: Recipe) -> dict:
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return [plain(v) for v in x] if isinstance(x, (list, tuple)) else x
    return plain(dataclasses.asdict(r))


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise RecipeError(f"malformed override {item!r}: expected key.path=value")
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"override {item!r}: invalid value: {_one_line(e)}") from None
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {item!r}: key '{'.'.join(parts[:i + 1])}' "
                              f"is {_describe(node)}, not a mapping")
    node[parts[-1]] = value


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `a.b.c=value` overrides (values read as YAML), validate."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key.path=value' strings, not one string")
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {_one_line(e)}") from None
    raw = {} if raw is None else raw
    try:
        if not isinstance(raw, dict):
            raise RecipeError(f"expected a mapping of sections, got {_describe(raw)}")
        for item in overrides:
            _apply_override(raw, item)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    return recipe_from_dict(raw, str(path))


def save_recipe(r: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML, atomically (temp file, then os.replace)."""
    path = Path(path)
    text = yaml.dump(recipe_to_dict(r), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=None, allow_unicode=True)
    atomic_write_text(path, text)
