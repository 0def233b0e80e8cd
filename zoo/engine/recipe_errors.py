"""One-line recipe errors: pydantic's findings rewritten to name the key path.

pydantic reports every problem with a location tuple (`('train', 'class_weights',
'list[...]', 1)`, union members tagged by name) and an English message of its
own; a recipe user wants `key 'train.class_weights[1]': expected float, got str
'x'` and, for an unknown key, the allowed ones with the close matches first.
This module walks the location through the schema to find the key path and the
annotation there, and words the first problem the same way for every section.
"""
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from zoo.common.names import close_matches


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the key path."""


def one_line(e) -> str:
    return " ".join(str(e).split())


def describe(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def join(parent: str, key) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def unknown_key(parent: str, key, allowed: list[str]) -> RecipeError:
    close = close_matches(key, allowed, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(join(parent, c)) for c in close)}?)" if close else ""
    what = f"key '{join(parent, key)}'" if parent else f"section '{key}'"
    order = close + [a for a in allowed if a not in close]
    return RecipeError(f"unknown {what}{hint}; allowed: {', '.join(order)}")


def _strip(tp):
    """The annotation without `Annotated[...]` metadata."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp) -> list:
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_strip(a) for a in get_args(tp)]
    return [tp]


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def type_name(tp) -> str:
    members = _members(tp)
    if len(members) > 1:
        return " or ".join(type_name(m) for m in members)
    tp = members[0]
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if tp is dict or origin is dict or _is_model(tp):
        return "mapping"
    if origin is Literal:
        return " or ".join(map(str, args))
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if tp is Any:
        return "any value"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _resolve(root, loc) -> tuple[list, Any, Any]:
    """(key path parts, annotation there, the model owning the last key) for a pydantic
    location; union member tags (strings that are not keys) are skipped."""
    parts, tp, owner = [], root, None
    for item in loc:
        members = _members(tp)
        if isinstance(item, int):
            lists = [m for m in members if get_origin(m) is list]
            tp = get_args(lists[0])[0] if lists and get_args(lists[0]) else Any
            parts.append(item)
            owner = None
            continue
        models = [m for m in members if _is_model(m)]
        if models:
            owner = models[0]
            field = owner.model_fields.get(item)
            tp = None if field is None else (
                Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)
            parts.append(item)
        # else: a union member's tag such as 'list[float]': the same key
    return parts, tp, owner


def _path(base: str, parts: list) -> str:
    for p in parts:
        base = join(base, p)
    return base


def _exact_length(tp) -> int | None:
    """N where `tp` (or a member) is a list of exactly N values."""
    raw = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    for m in raw:
        if get_origin(m) is Annotated:
            metadata = [c for info in get_args(m)[1:] for c in getattr(info, "metadata", [info])]
            low = {getattr(c, "min_length", None) for c in metadata} - {None}
            high = {getattr(c, "max_length", None) for c in metadata} - {None}
            if len(low) == 1 and low == high:
                return low.pop()
    return None


def _plural(n, word="value") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _message(err: dict, root, base: str) -> RecipeError:
    parts, tp, owner = _resolve(root, err["loc"])
    path, kind, ctx, value = _path(base, parts), err["type"], err.get("ctx") or {}, err.get("input")
    key = f"key '{path}'"
    if kind == "extra_forbidden":
        return unknown_key(_path(base, parts[:-1]), parts[-1], list(owner.model_fields) if owner else [])
    if kind == "missing":
        return RecipeError(f"{key}: required")
    if kind in ("value_error", "assertion_error"):
        text = one_line(ctx.get("error", err["msg"]))
        # A model-level check (relations between keys) names its keys itself.
        return RecipeError(text if _is_model(_strip(tp)) else f"{key}: {text}")
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        return RecipeError(f"{key}: must be {bounds[kind]} {next(iter(ctx.values()))}, got {value!r}")
    if kind in ("too_short", "too_long"):
        exact = _exact_length(tp)
        if exact is not None:
            want = _plural(exact)
        elif kind == "too_short":
            want = f"at least {_plural(ctx['min_length'])}"
        else:
            want = f"at most {_plural(ctx['max_length'])}"
        return RecipeError(f"{key}: expected {want}, got {ctx.get('actual_length', len(value))}")
    members = [m for m in _members(tp) if m is not type(None)]
    if members and all(get_origin(m) is Literal for m in members):
        choices = [str(a) for m in members for a in get_args(m)]
        return RecipeError(f"{key}: expected one of {', '.join(choices)}, got {describe(value)}")
    return RecipeError(f"{key}: expected {type_name(tp)}, got {describe(value)}")


def pydantic_error(e: ValidationError, root, base: str = "") -> RecipeError:
    """The first problem of `e`, found validating against `root` (a model class or an
    annotation) the value at key path `base`, as a one-line RecipeError. Of the
    errors for one key (one per union member) the deepest is worded, so `[1, x]`
    names element 1."""
    errors = e.errors(include_url=False)
    keys = [_resolve(root, err["loc"])[0] for err in errors]
    same = [i for i, k in enumerate(keys) if k[:2] == keys[0][:2]]
    return _message(errors[max(same, key=lambda i: (len(keys[i]), -i))], root, base)
