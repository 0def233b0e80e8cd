"""Zoo entries: trained weights as data, and where their list comes from.

An `Entry` says where the weights are (`url`, `sha256`) apart from how the
model is built (`model`, the keyword arguments of `zoo.create`), what a user
needs to use them (classes, palette, mean/std) and what they were measured to
do (evaluation protocol, metrics, cost, latency, recipe, command, machine, date).

`ENTRIES` holds those shipped in the package (`zoo/weights/index.json`, written by
`tools/publish.py --ship`), those of `register_entry`, and those of the JSON file
`$ZOO_INDEX` names. Index files are read on first use and again when their path
changes; a relative `url` is relative to the index file; a name given twice is
refused. Loading the weights is `zoo.hub.load`'s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from zoo.common.names import did_you_mean
from zoo.hub.formats import HEX64, WEIGHTS
from zoo.models import registry

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Entry:
    """One set of trained weights. `model["name"]` is the architecture or preset it builds."""
    name: str
    model: dict
    url: str
    sha256: str  # of model.safetensors
    classes: list
    palette: list = field(default_factory=list)
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    eval_protocol: dict = field(default_factory=dict)  # mode, crop_size, stride, scales, flip, frame_size
    metrics: dict = field(default_factory=dict)  # mIoU, per_class_iou, ...
    # the entry's recipe retrained without a sequence-disjoint holdout and scored on it:
    # {"holdout", "mIoU", "per_class_iou", "calibrated", "command", "machine", "date"}
    validation: dict = field(default_factory=dict)
    dataset: str = ""
    recipe: dict | str | None = None  # the resolved recipe inline, or a path / URL to it
    speed: dict = field(default_factory=dict)  # {"latency_ms": 41.0, "device": "...", "threads": 1, "size": [h, w]}
    cost: dict = field(default_factory=dict)  # {"params": 1234567, "gflops": 12.3, "size": [360, 480]}
    recipe_file: str = ""  # the recipe in the repository that reproduces it
    command: str = ""  # the command that trained it
    machine: str = ""  # where it was trained
    date: str = ""  # when (YYYY-MM-DD)
    pictures: list = field(default_factory=list)  # repository-relative: confusion matrix, val predictions
    license: str = ""
    intended_use: str = ""
    limitations: str = ""
    notes: str = ""

    def __post_init__(self):
        where = f"entry {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"{where}: name must be letters, digits, '_', '.', '-'")
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise ValueError(f"{where}: model must be a dict of zoo.create arguments with a 'name'")
        if not isinstance(self.url, str) or not self.url:
            raise ValueError(f"{where}: url must be a non-empty string")
        if not isinstance(self.sha256, str) or not HEX64.fullmatch(self.sha256):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"{where}: classes must be a non-empty list of names")
        if self.palette and len(self.palette) != len(self.classes):
            raise ValueError(f"{where}: {len(self.palette)} palette colours for {len(self.classes)} classes")
        n = self.model.get("num_classes")
        if n is not None and n != len(self.classes):
            raise ValueError(f"{where}: model num_classes={n} but {len(self.classes)} class names")

    @property
    def arch(self) -> str:
        return self.model["name"]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def weights_url(self) -> str:
        return self.url if self.url.endswith(".safetensors") else f"{self.url.rstrip('/')}/{WEIGHTS}"

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(h, w) of the input the model sees under its evaluation protocol: the frames it was
        evaluated on (`eval_protocol["frame_size"]`, after the val transforms) times its one eval
        scale; None for several scales, a sliding window or frames of several sizes."""
        frame = self.eval_protocol.get("frame_size")
        scales = list(self.eval_protocol.get("scales") or [1.0])
        if not frame or len(scales) != 1 or self.eval_protocol.get("mode", "whole") != "whole":
            return None
        return max(1, round(frame[0] * scales[0])), max(1, round(frame[1] * scales[0]))

    def pretrained_cfg(self) -> dict:
        """What the weights expect of an input, as timm's `pretrained_cfg` says it: `input_size`
        (3, h, w) the model was scored at (None where the protocol feeds several sizes),
        `frame_size` (h, w) of the dataset's frames, the eval scales and flip, mean, std,
        classes. `zoo.predict(model, image)` applies all of it to an image of any size."""
        size = self.input_size
        protocol = self.eval_protocol
        return {"input_size": (3, *size) if size else None,
                "frame_size": tuple(self.eval_protocol.get("frame_size") or ()) or None,
                "eval_scales": tuple(protocol.get("scales") or [1.0]), "flip": bool(protocol.get("flip")),
                "mean": tuple(self.mean), "std": tuple(self.std), "num_classes": self.num_classes,
                "classes": tuple(self.classes)}

    def meta(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "palette": list(self.palette),
                "mean": list(self.mean), "std": list(self.std),
                "eval_protocol": dict(self.eval_protocol), "metrics": dict(self.metrics),
                "dataset": self.dataset, "source": self.url, "sha256": self.sha256}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "entry") -> "Entry":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(names)})")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{where}: missing key {missing[0]!r}")
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


class _Entries(Mapping):
    """Entries shipped in the package (`zoo/weights/index.json`), registered in code, and
    those of the `$ZOO_INDEX` file. Each index file is read on first use, and read again
    when its path changes; a name given twice is refused."""

    def __init__(self):
        self._code: dict[str, Entry] = {}
        self._files: dict[str, tuple[str | None, dict[str, Entry]]] = {}

    def _file(self, key: str, path: str | None, label: str) -> dict[str, Entry]:
        cached = self._files.get(key)
        if cached is None or cached[0] != path:
            cached = (path, read_index(path, label) if path else {})
            self._files[key] = cached
        return cached[1]

    def _all(self) -> dict[str, Entry]:
        shipped_path = str(SHIPPED_INDEX) if Path(SHIPPED_INDEX).is_file() else None
        shipped = self._file("shipped", shipped_path, str(SHIPPED_INDEX))
        path = os.environ.get("ZOO_INDEX") or None
        index = self._file("env", path, f"ZOO_INDEX={path}")
        for other, what in ((shipped, "shipped with the package"), (self._code, "registered in code")):
            twice = sorted(set(index) & set(other))
            if twice:
                raise ValueError(f"ZOO_INDEX={path}: entry {twice[0]!r} is already {what}")
        twice = sorted(set(shipped) & set(self._code))
        if twice:
            raise ValueError(f"register_entry: entry {twice[0]!r} is already shipped with the package")
        return {**shipped, **self._code, **index}

    def __getitem__(self, name: str) -> Entry:
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def _add(self, entry: Entry) -> None:
        if entry.name in self._all():
            raise ValueError(f"zoo entry {entry.name!r} is already registered")
        _check_names(entry, f"register_entry({entry.name!r})")
        self._code[entry.name] = entry


# The entries whose weights ship inside the package (written by `tools/publish.py --ship`).
SHIPPED_INDEX = Path(__file__).resolve().parents[1] / "weights" / "index.json"
ENTRIES: Mapping[str, Entry] = _Entries()


def register_entry(entry: Entry) -> Entry:
    """Add an entry (duplicates refused); `zoo.create(entry.name, pretrained=True)` then builds it."""
    ENTRIES._add(entry)
    return entry


def check_entry_name(name: str, where: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: entry name {name!r} must be letters, digits, '_', '.', '-'")
    if name in registry.architectures():
        raise ValueError(f"{where}: entry name {name!r} is an architecture's name; "
                         "give the trained weights their own name (e.g. <arch>_<dataset>)")


def _check_names(entry: Entry, where: str) -> None:
    check_entry_name(entry.name, where)
    if entry.arch not in registry.architectures():
        hint = did_you_mean(entry.arch, registry.architectures())
        hint = f"; {hint}" if hint else ""
        raise ValueError(f"{where}: model name {entry.arch!r} is not a registered architecture{hint}")


def read_index(path: str | os.PathLike, where: str | None = None) -> dict[str, Entry]:
    """Entries of a JSON index file: `{"entries": [{...Entry fields...}, ...]}` (or a bare list).
    A relative `url` is taken relative to the index file's folder. Errors start with `where`."""
    path = Path(path).expanduser()
    where = where or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    items = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected {{\"entries\": [...]}} or a list of entries")
    entries: dict[str, Entry] = {}
    for i, item in enumerate(items):
        label = f"{where}: entries[{i}]" + (f" ({item['name']!r})" if isinstance(item, dict) and "name" in item else "")
        if isinstance(item, dict) and isinstance(item.get("url"), str) and _is_relative(item["url"]):
            item = {**item, "url": str((path.parent / item["url"]).resolve())}
        entry = Entry.from_dict(item, label)
        if entry.name in entries:
            raise ValueError(f"{label}: duplicate entry name")
        _check_names(entry, label)
        entries[entry.name] = entry
    return entries


def _is_relative(url: str) -> bool:
    return len(urlparse(url).scheme) <= 1 and not Path(url).expanduser().is_absolute()


def get_entry(name: str) -> Entry:
    if name in ENTRIES:
        return ENTRIES[name]
    listing = did_you_mean(name, list(ENTRIES), n=4) or \
        f"entries with weights: {', '.join(sorted(ENTRIES)) or 'none registered'}"
    raise ValueError(f"no zoo entry with trained weights named {name!r}; {listing} "
                     "(zoo.list_models(pretrained=True) lists them)")
