"""One registry shape for everything a user can add: models, upsamplers, datasets,
losses and ablation measurements.

Each kind is one `Registry`: a name -> object table with the facts declared at
registration (`info`: an architecture's tiny test arguments, a dataset's
augmentation family), the same did-you-mean on unknown names, and the same way
in from inside or outside the package:

    from decoders.upsample import UPSAMPLERS

    @UPSAMPLERS.register("my_up")
    class MyUp(Upsampler): ...

Each kind also has a `register_<kind>` function doing the same with the kind's
own keywords (`register_model(tiny=...)`, `register_dataset(family=...)`).

A registry is complete on first use because the package holding it imports its
built-in modules (zoo.models, decoders and zoo.data do, and Python runs a package's
`__init__` before any of its modules). `check` validates every object registered (an upsampler must be an `Upsampler`).

Iteration (`list(REG)`, `keys`, `values`, `items`) follows registration order;
`names()` is sorted. The mapping methods (`[]`, `get(name, default)`, `pop`,
`in`) make a registry usable where a dict was (and by `monkeypatch.setitem`).
Plain Python, no torch: every layer (decoders included) may import it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from zoo.common.names import did_you_mean

T = TypeVar("T")
_MISSING: Any = object()


class Registry(Generic[T]):
    def __init__(self, kind: str, *, hint: str = "", check: Callable[[str, T], None] | None = None):
        self.kind = kind            # "model", "upsampler", ...: the word errors use
        self.hint = hint            # where the full list is, for error messages
        self._check = check
        self._items: dict[str, T] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str | None = None, obj: T | None = None, *, replace: bool = False, **info):
        """Register `obj` as `name` (a decorator when `obj` is not given; `name`
        defaults to the object's `__name__`). `info` holds what the kind declares
        beside the object (`tiny=`, `family=`, ...). A taken name is refused unless
        `replace=True`."""
        def add(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise ValueError(f"register a {self.kind} with a name: {o!r} has no __name__")
            if key in self._items and not replace:
                raise ValueError(f"{self.kind} {key!r} is already registered (replace=True to override)")
            if self._check is not None:
                self._check(key, o)
            self._items[key] = o
            self._info[key] = dict(info)
            return o
        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove `name` (nothing happens when it is not registered)."""
        self._items.pop(name, None)
        self._info.pop(name, None)

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The object registered as `name`; an unknown name is a ValueError naming the close
        ones (or `default`, when given, as dict.get)."""
        if name in self._items:
            return self._items[name]
        if default is not _MISSING:
            return default
        raise ValueError(self.unknown(name))

    def unknown(self, name, extra: Iterable[str] = (), listing: str | None = None) -> str:
        """The message for an unknown `name`: close matches among the registered and `extra`
        names, then `listing` (default: the registry's `hint` in parentheses, else the names)."""
        names = [*self._items, *extra]
        hint = did_you_mean(name, names, n=4)
        if listing is not None:
            tail = f"; {listing}"
        else:
            tail = f" ({self.hint})" if self.hint else f"; known: {', '.join(sorted(names))}"
        return f"unknown {self.kind} {name!r}{'; ' + hint if hint else ''}{tail}"

    def info(self, name: str) -> dict:
        """What was declared with `name` at registration (a copy)."""
        self.get(name)
        return dict(self._info[name])

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def pop(self, name: str, default: Any = _MISSING) -> T:
        """Unregister `name` and return its object (`default` when absent, else KeyError)."""
        if name not in self._items:
            if default is _MISSING:
                raise KeyError(name)
            return default
        obj = self._items[name]
        self.unregister(name)
        return obj

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(self.unknown(name))
        return self._items[name]

    def __setitem__(self, name: str, obj: T) -> None:
        self.register(name, obj, replace=True, **self._info.get(name, {}))

    def __delitem__(self, name: str) -> None:
        self.pop(name)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} registered)"


def check_arguments(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse keyword arguments outside `valid`, naming them, the close valid ones and all valid ones."""
    valid = list(valid)
    unknown = [k for k in given if k not in valid]
    if unknown:
        hints = [h for k in unknown if (h := did_you_mean(k, valid))]
        raise ValueError(f"{where}: unknown argument(s) {', '.join(unknown)}"
                         f"{'; ' + '; '.join(hints) if hints else ''}; valid: {', '.join(valid)}")
