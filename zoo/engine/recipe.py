"""Recipe schema: typed sections, YAML load, dotted overrides, atomic save.

A recipe is one flat YAML file (no inheritance between files) with sections
``model``, ``data``, ``train``, ``eval`` and ``log``. ``model`` is free-form, as
it goes straight into ``zoo.create(**model)``, and is checked against the
builder's keyword parameters; the other sections are pydantic models: types,
choices (``Literal``), ranges (``Field(ge=..)``), unknown keys refused
(``extra='forbid'``), and relations between keys checked once all are read.
Every problem becomes a one-line ``RecipeError`` naming the recipe file, the
key path and, for unknown keys, the close matches.
"""
import copy
import importlib
import inspect
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from zoo.common.fileio import atomic_write_text
from zoo.engine.recipe_errors import RecipeError, describe, one_line, pydantic_error, unknown_key
from zoo.engine.recipe_yaml import RecipeDumper, RecipeLoader

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTO_ON_OFF = Literal["auto", "on", "off"]

__all__ = ["Recipe", "DataConfig", "TrainConfig", "EvalConfig", "LogConfig", "RecipeError",
           "RecipeLoader", "load_recipe", "recipe_from_dict", "recipe_to_dict", "save_recipe",
           "parse_override", "apply_overrides", "validate_model"]


def _as_list(value):
    return list(value) if isinstance(value, tuple) else value  # recipes built in code may hold tuples


def _list(item, **size) -> Any:
    return Annotated[list[item], BeforeValidator(_as_list), Field(**size)]


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Pair = _list(PosInt, min_length=2, max_length=2)  # [h, w]


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


class _Section(BaseModel):
    # strict: YAML gives real types, so "3" is not an int and 1 is not a bool.
    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(_Section):
    dataset: str = "synthetic"  # voc | cityscapes | camvid | coco | folder | synthetic
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    batch_size: PosInt = 8
    num_workers: NonNegInt = 2
    crop_size: Optional[Pair] = None
    mean: _list(float, min_length=3, max_length=3) = list(IMAGENET_MEAN)
    std: _list(PosFloat, min_length=3, max_length=3) = list(IMAGENET_STD)
    train_transforms: Optional[_list(dict)] = None  # [{name, params}] albumentations entries
    val_transforms: Optional[_list(dict)] = None
    options: dict = Field(default_factory=dict)  # dataset-specific keyword arguments
    # The label value loss, metrics and padding treat as "not labelled"; null: the dataset's own.
    ignore_index: Optional[Annotated[int, Field(ge=0, le=255)]] = None
    pin_memory: bool = True
    persistent_workers: bool = True


class TrainConfig(_Section):
    iters: PosInt = 1000
    seed: NonNegInt = 0
    device: Annotated[str, AfterValidator(_device)] = "auto"
    threads: Optional[PosInt] = None  # torch.set_num_threads; null: torch's default (OMP_NUM_THREADS)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: PosFloat = 0.01
    momentum: Fraction = 0.9
    weight_decay: NonNegFloat = 1e-4
    betas: _list(Fraction, min_length=2, max_length=2) = [0.9, 0.999]
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    power: PosFloat = 0.9
    warmup_iters: NonNegInt = 0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    encoder_lr_mult: NonNegFloat = 1.0
    loss: str = "ce"
    aux_weight: NonNegFloat = 0.0
    # A list of per-class weights, or the name of a rule that computes them.
    class_weights: Union[_list(NonNegFloat, min_length=1), Literal["median_frequency"], None] = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: AUTO_ON_OFF = "auto"
    compile: AUTO_ON_OFF = "auto"
    grad_clip: Optional[PosFloat] = None
    # Score, checkpoint and ship an exponential moving average of the weights (zoo/engine/ema.py).
    ema_decay: Optional[Annotated[float, Field(gt=0, lt=1)]] = None
    deterministic: bool = False
    sync_bn: bool = False
    log_interval: PosInt = 20
    checkpoint_interval: PosInt = 200
    # Also checkpoint once this many minutes have passed since the last one (a long CPU
    # run keeps its progress); null: by checkpoint_interval alone. Ctrl-C checkpoints too.
    checkpoint_minutes: Optional[PosFloat] = None


class EvalConfig(_Section):
    interval: PosInt = 500
    mode: Literal["whole", "slide"] = "whole"
    crop_size: Optional[Pair] = None  # slide window [h, w]
    stride: Optional[Pair] = None
    scales: _list(PosFloat, min_length=1) = [1.0]
    flip: bool = False
    batch_size: PosInt = 1
    max_images: Optional[PosInt] = None


class LogConfig(_Section):
    wandb: bool = False
    project: str = "zoo"
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    num_images: NonNegInt = 4  # prediction overlays to save / log


class Recipe(_Section):
    model: dict  # zoo.create(**model); must contain "name"
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _relations(self) -> "Recipe":
        t, e = self.train, self.eval
        if t.warmup_iters >= t.iters:
            raise ValueError(f"train.warmup_iters ({t.warmup_iters}) must be < train.iters ({t.iters})")
        if e.mode == "slide" and e.crop_size is None:
            raise ValueError("eval.crop_size: required when eval.mode is slide (the window [h, w])")
        if e.stride is not None and e.crop_size is not None and any(
                s > c for s, c in zip(e.stride, e.crop_size)):
            raise ValueError(f"eval.stride ({e.stride}) must not exceed eval.crop_size ({e.crop_size}): "
                             "windows would leave pixels unseen")
        d = self.data
        if d.crop_size is not None and d.train_transforms is not None:
            # crop_size only sizes the default pipeline; listed entries crop (or not) themselves
            raise ValueError(f"data.crop_size ({d.crop_size}) has no effect when data.train_transforms is "
                             "set: give the crop in data.train_transforms (RandomCrop, PadIfNeeded) and "
                             "set data.crop_size=null")
        k = self.model.get("num_classes")
        if isinstance(t.class_weights, list) and isinstance(k, int) and len(t.class_weights) != k:
            raise ValueError(f"train.class_weights has {len(t.class_weights)} values but "
                             f"model.num_classes is {k}")
        return self


# ----------------------------------------------------------------------------- model section

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
    """Simple string annotations (`from __future__ import annotations`) to types, else None.

    Hand-written: `typing.get_type_hints` needs the builder's module namespace, and
    the registry hands over `inspect.Parameter`s only."""
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


def _as_yaml_type(tp):
    """`tp` with tuples and sequences as lists: YAML has no tuples, and strict pydantic
    takes a tuple only for a tuple annotation."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return Union[tuple(_as_yaml_type(a) for a in args)]
    if origin in (tuple, Sequence) or tp in (tuple, Sequence):
        elems = [a for a in args if a is not Ellipsis] or [Any]
        item = _as_yaml_type(elems[0]) if len(set(elems)) == 1 else Union[tuple(map(_as_yaml_type, elems))]
        if origin is tuple and Ellipsis not in args and args:
            return _list(item, min_length=len(args), max_length=len(args))
        return _list(item)
    if origin is list:
        return _list(_as_yaml_type(args[0]) if args else Any)
    return tp


def _keyword_params(params) -> dict:
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p for k, p in params.items() if p.kind in keyword}


def _check_value(value, tp, path: str) -> None:
    tp = _as_yaml_type(tp)
    try:
        TypeAdapter(tp).validate_python(value, strict=True)
    except ValidationError as e:
        raise pydantic_error(e, tp, path) from None


def validate_model(model: dict) -> None:
    """Check `model` against what `zoo.create` takes: its own keywords (`pretrained`) and
    the builder's keyword parameters; values against their simple annotations."""
    if not isinstance(model, dict):
        raise RecipeError(f"key 'model': expected mapping, got {describe(model)}")
    name = model.get("name")
    start = model.get("pretrained")
    if name is None and isinstance(start, str) and ("/" in start or start.endswith(".safetensors")):
        raise RecipeError(f"key 'model.name': required when model.pretrained is a local run or file "
                          f"({start!r}); only an entry's name gives its own architecture")
    if name is None and isinstance(start, str):
        name = start  # starting from an entry: its architecture by default
    if name is None:
        raise RecipeError("key 'model.name': required (a registered model name)")
    _check_value(name, str, "model.name")
    factory = importlib.import_module("zoo.factory")  # imports torch: only when asked
    try:
        builder = factory.builder_params(name)
    except ValueError as e:
        raise RecipeError(f"key 'model.name': {one_line(e)}") from None
    params = _keyword_params(inspect.signature(factory.create).parameters)
    for key in ("name", "init_from"):  # the recipe says `pretrained: <entry or folder>` (trainer.build_model)
        params.pop(key, None)
    params.update(_keyword_params(builder))
    open_ended = any(p.kind is p.VAR_KEYWORD for p in builder.values())
    for key, value in model.items():
        if key == "name" or value is None or (key not in params and open_ended):
            continue  # zoo.create drops None keywords: unset keeps the builder's default
        if key not in params:
            raise unknown_key("model", key, ["name", *params])
        p = params[key]
        tp = _parse_annotation(p.annotation) if isinstance(p.annotation, str) else p.annotation
        if tp is not None and tp is not inspect.Parameter.empty and _is_simple(tp):
            _check_value(value, tp, f"model.{key}")  # an nn.Module or callable annotation: unchecked


# ----------------------------------------------------------------------------- files and overrides

def recipe_from_dict(d: dict, source: str = "<dict>") -> Recipe:
    try:
        if not isinstance(d, dict):
            raise RecipeError(f"expected a mapping of sections, got {describe(d)}")
        try:
            recipe = Recipe.model_validate({"model": {}, **copy.deepcopy(d)})
        except ValidationError as e:
            raise pydantic_error(e, Recipe, "") from None
        validate_model(recipe.model)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None
    return recipe


def recipe_to_dict(r: Recipe) -> dict:
    return r.model_dump()


def parse_override(item: str) -> tuple[str, Any]:
    """'train.iters=4' -> ('train.iters', 4): the value read as YAML 1.2 (null, 3, 1e-3, [512, 512])."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not all(key.split(".")):
        raise RecipeError(f"malformed override {item!r}: expected key.path=value")
    try:
        return key, yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as e:
        raise RecipeError(f"override {item!r}: invalid value: {one_line(e)}") from None


def apply_overrides(raw: dict, items: Sequence[str]) -> dict:
    """Apply 'a.b.c=value' strings to the nested dict `raw` in order, creating
    mappings on the way; returns `raw`."""
    if isinstance(items, str):
        raise TypeError("overrides must be a list of 'key.path=value' strings, not one string")
    for item in items:
        key, value = parse_override(item)
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: key '{'.'.join(parts[:i + 1])}' "
                                  f"is {describe(node)}, not a mapping")
        node[parts[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `a.b.c=value` overrides (values read as YAML), validate."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key.path=value' strings, not one string")
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {one_line(e)}") from None
    raw = {} if raw is None else raw
    try:
        if not isinstance(raw, dict):
            raise RecipeError(f"expected a mapping of sections, got {describe(raw)}")
        apply_overrides(raw, overrides)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    return recipe_from_dict(raw, str(path))


def dump_recipe(r: Recipe) -> str:
    """The resolved recipe as YAML: every key, defaults included, in schema order."""
    return yaml.dump(recipe_to_dict(r), Dumper=RecipeDumper, sort_keys=False,
                     default_flow_style=None, allow_unicode=True)


def format_recipe(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """`tools/train.py --print-recipe`: the recipe file with overrides applied, resolved."""
    return dump_recipe(load_recipe(path, overrides))


def save_recipe(r: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML, atomically (temp file, then os.replace)."""
    atomic_write_text(Path(path), dump_recipe(r))
