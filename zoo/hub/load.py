"""Zoo weights: building models from trained weights, and verified, cached, resumable downloads.

    zoo.create("unet_resnet10t_camvid", pretrained=True)                  # an entry
    zoo.create("unet_resnet10t_camvid", pretrained=True, num_classes=5)   # fine-tuning from it
    zoo.create("unet_resnet10t_camvid", init_from="runs/stage1")          # a run's weights
    zoo.load("runs/unet_camvid")                                        # a run folder
    zoo.load("https://host/models/unet_resnet10t_camvid", sha256="...")   # a published folder
    zoo.load("hf-hub:org/unet_resnet10t_camvid@<commit>", sha256="...")   # on the Hugging Face Hub (zoo.hub.hf)

The entries themselves (what they are, where their list comes from) are
`zoo.hub.entries`; `zoo.create` (zoo/factory.py) calls `create_entry`,
`create_from_hub` and `init_from` here. A shipped or local weights file is hashed
before every load and refused, by name, when its sha256 differs.

A published folder (written by `zoo.lab.publish`; the same two files on the Hugging Face Hub) holds

    config.json                 format, name, model (zoo.create arguments), weights_sha256,
                                classes, palette, mean, std, eval_protocol, metrics, dataset,
                                recipe, source
    model.safetensors           the weights

`sha256=` pins such a folder by its config.json (`sha256sum config.json`), and
config.json pins the weights by their `weights_sha256`, so one digest covers
the architecture, the classes, mean/std and the weights; the weights are
checked against config.json on every load, pinned or not. `Entry.url` is such a
folder's URL (weights at `<url>/model.safetensors`), the URL of the
`.safetensors` file itself (a release asset), or `hf-hub:org/repo@rev`;
http(s)://, file:// and plain paths work. An entry's own `sha256` pins its weights.

Cache of http(s) downloads (`$ZOO_HOME`, default `~/.cache/segzoo`; the Hub's
files live in huggingface_hub's own cache):

    entries/<entry name>/model.safetensors
    urls/<sha256(url)[:16]>/config.json, model.safetensors

Downloads go to `<file>.part` and resume with an HTTP Range request; a file
gets its final name only after its sha256 matched, and cached files are hashed
again before every load. A mismatch removes the file and raises. An unpinned
config.json is downloaded again on every online load (a folder published anew
at the same URL is seen); a pinned one comes from the cache while it matches.
`ZOO_OFFLINE=1` reads the caches only. Pickle checkpoints are refused: nothing
from outside is unpickled. Encoder weights are never downloaded here: the zoo's
weights cover the whole model.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from zoo.common.names import did_you_mean
from zoo.common.tracing import is_tracing
from zoo.hub import hf
from zoo.hub.download import (  # noqa: F401
    ChecksumError,
    DownloadError,
    OfflineError,
    cache_dir,
    download,
    fetch,
    local_path,
    offline,
    sha256_of,
    verify,
)
from zoo.hub.entries import ENTRIES, Entry, check_entry_name, get_entry, read_index, register_entry  # noqa: F401
from zoo.hub.formats import (  # noqa: F401
    CONFIG,
    HEX64,
    HF_PREFIX,
    PUBLISHED_FORMAT,
    WEIGHTS,
    load_meta,
    model_and_meta,
    read_config,
    read_tensors,
    resolve_run,
)
from zoo.models import registry

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")


def with_overrides(base: dict, kwargs: dict) -> dict:
    """An entry's (or repository's) model arguments changed by the caller's; its
    `logit_bias`, made for its classes, is dropped when `num_classes` changes."""
    args = {**base, **kwargs}
    if (registry.LOGIT_BIAS in base and registry.LOGIT_BIAS not in kwargs
            and args.get("num_classes") != base.get("num_classes")):
        del args[registry.LOGIT_BIAS]
    return args


def create_entry(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """The entry's model. `pretrained=True`: its trained weights (verified; downloaded and
    cached when not shipped) and `.meta`. Keywords change the architecture, e.g.
    `num_classes=5` to fine-tune: every tensor whose shape still fits is loaded, the others
    (the classifier) keep their fresh values and a warning names them.
    `pretrained=False`: the same architecture with fresh weights."""
    entry = get_entry(name)
    if not pretrained:
        return registry.create(**with_overrides(entry.model, kwargs))
    if "encoder_weights" in kwargs:
        raise ValueError(f"{entry.name}: encoder_weights has no effect with pretrained=True "
                         "(the entry's weights cover the whole model)")
    model = build_architecture(with_overrides(entry.model, kwargs))
    skipped = load_weights(model, entry_weights(entry), entry.name, skip_mismatched=True)
    model.meta = entry.meta()
    model.pretrained_cfg = entry.pretrained_cfg()
    if entry.input_size and not skipped:
        warn_on_other_sizes(model, entry.name, entry.input_size)
    if skipped:
        model.meta["skipped"] = skipped
        if model.config.get("num_classes", entry.num_classes) != entry.num_classes:
            for key in ("classes", "palette", "metrics"):  # they describe the entry's classifier
                model.meta.pop(key)
            for key in ("classes", "num_classes"):
                model.pretrained_cfg.pop(key)
    return model


_PROTOCOL_APPLIED = contextvars.ContextVar("protocol_applied", default=False)


@contextlib.contextmanager
def protocol_applied():
    """Inside, an entry's model is fed by code that applies its evaluation protocol to an image
    of any size (`zoo.predict`): the size warning below has nothing to tell."""
    token = _PROTOCOL_APPLIED.set(True)
    try:
        yield
    finally:
        _PROTOCOL_APPLIED.reset(token)


def warn_on_other_sizes(model: nn.Module, name: str, size: tuple[int, int]) -> None:
    """Warn, once, when the model is evaluated on inputs of another size than its entry was
    scored at (a full frame fed to an entry evaluated on halved frames scores lower than
    its card says), naming the size to feed and what applies the protocol itself. Training
    (crops of any size) and tracing are left alone."""
    told = []

    def check(module, args):
        x = args[0] if args else None
        if module.training or told or not isinstance(x, torch.Tensor) or is_tracing() or _PROTOCOL_APPLIED.get():
            return
        if tuple(x.shape[-2:]) != tuple(size):
            told.append(True)
            frame = module.pretrained_cfg.get("frame_size")
            how = f" (frames of {frame[0]}x{frame[1]} resized by {module.pretrained_cfg['eval_scales'][0]:g})" \
                if frame and tuple(frame) != tuple(size) else ""
            warnings.warn(f"{name} was scored on {size[0]}x{size[1]} inputs{how}; this "
                          f"{x.shape[-2]}x{x.shape[-1]} input will not give its card's accuracy. Resize "
                          "to model.pretrained_cfg['input_size'], or call zoo.predict(model, image), "
                          "which applies the entry's evaluation protocol to an image of any size.",
                          stacklevel=5)

    model.register_forward_pre_hook(check)


def create_from_hub(source: str, pretrained: bool = False, sha256: str | None = None, **kwargs) -> nn.Module:
    """`zoo.create("hf-hub:org/repo[@rev]")`: the architecture its config.json names (keywords
    change it, as for entries); `pretrained=True` also loads its weights (see zoo.hub.hf)."""
    weights, model_kwargs, meta = hf.download(source, sha256=sha256, with_weights=pretrained)
    model = build_architecture(with_overrides(model_kwargs, kwargs))
    if pretrained:
        meta["skipped"] = load_weights(model, weights, source, skip_mismatched=True)
        model.meta = meta
    return model


def local_weights(source: str) -> Path | None:
    """The weights file a local path names: a run folder (its best checkpoint), one of its
    checkpoint folders, a published folder or a `.safetensors` file; None for other sources."""
    path = local_path(source)
    looks_like_path = "/" in source or os.sep in source or source.endswith(".safetensors")
    if path is None or source in ENTRIES or not (path.exists() or looks_like_path):
        return None  # a URL, or an entry's name
    if (path / "checkpoints").is_dir():
        return resolve_run(path, "best") / WEIGHTS
    if path.is_dir() and (path / WEIGHTS).is_file():
        if (path / CONFIG).is_file():  # a published folder: its config.json pins the weights, as for zoo.load
            _, meta = read_config(path / CONFIG, path.name)
            verify(path / WEIGHTS, meta["weights_sha256"], str(path / WEIGHTS), remove=False)
        return path / WEIGHTS
    if path.suffix == ".safetensors" and path.is_file():
        return path
    raise FileNotFoundError(f"{source}: not a run folder, checkpoint folder, published folder or "
                            ".safetensors file to start from")


def init_from(model: nn.Module, source: str) -> nn.Module:
    """Start `model` from trained weights, skipping the tensors whose shapes differ: an entry's
    (a name or `hf-hub:...`) or a local run's (a run, checkpoint or published folder, or a
    `.safetensors` file: a second stage of training, say at full resolution); a recipe's
    `model.pretrained`."""
    if source.startswith(HF_PREFIX):
        weights, _, _ = hf.download(source, with_weights=True)
    else:
        weights = local_weights(source) or entry_weights(get_entry(source))
    model.meta = {"initialised_from": source,
                  "skipped": load_weights(model, weights, source, skip_mismatched=True)}
    return model


# ---------------------------------------------------------------- building



def load_weights(model: nn.Module, weights: Path, source: str, skip_mismatched: bool = False) -> list[str]:
    """Load a safetensors file into `model` (fp16 on disk becomes the model's dtype). Keys must
    match; with `skip_mismatched`, tensors whose shapes differ keep the model's values and are
    returned (and named in a warning), else they are an error."""
    import warnings

    state = read_tensors(Path(weights))  # names the file when it is truncated or corrupt
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{weights}: the weights of {source} do not fit {model.config}: "
                         f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    differ = [k for k in own if state[k].shape != own[k].shape]
    if differ and not skip_mismatched:
        raise ValueError(f"{weights}: the weights of {source} do not fit {model.config}: shapes differ "
                         f"for {_few([f'{k} {list(state[k].shape)} vs {list(own[k].shape)}' for k in differ])}")
    skipped = [f"{k} {list(state[k].shape)} -> {list(own[k].shape)}" for k in differ]
    if skipped:
        warnings.warn(f"{source}: {len(skipped)} tensor(s) whose shapes differ were not loaded "
                      f"and keep fresh values: {', '.join(skipped)}", stacklevel=3)
    state.update({k: own[k] for k in differ})
    model.load_state_dict(state, strict=True)
    return [k for k in differ]


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def build_model(model_kwargs: dict, weights: Path, map_location="cpu") -> nn.Module:
    """`build_architecture(model_kwargs)`, then `weights` loaded strictly."""
    try:
        model = build_architecture(model_kwargs)
    except ValueError as e:  # name the file the arguments came from
        folder = Path(weights).parent
        where = next((folder / f for f in (CONFIG, "meta.json") if (folder / f).is_file()), weights)
        raise ValueError(f"{where}: {e}") from None
    load_weights(model, weights, str(weights))
    return model.to(map_location)


def build_architecture(model_kwargs: dict) -> nn.Module:
    """`zoo.create(**model_kwargs)` with fresh weights and never any encoder weights."""
    kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"model arguments {model_kwargs!r} have no architecture 'name'")
    kwargs.pop("encoder_weights", None)
    # build(), not create(): create() drops None, and None is the point here.
    extra = {"encoder_weights": None} if "encoder_weights" in registry.builder_params(name) else {}
    model = registry.build(name, {**kwargs, **extra})  # refuses unknown arguments by name
    model.config.pop("encoder_weights", None)  # the trained weights cover the encoder
    return model


def load(source, sha256: str | None = None, pointer: str = "best", map_location="cpu") -> nn.Module:
    """A trained model in eval mode, with `.meta` (classes, palette, mean, std, eval_protocol,
    metrics, ...), from a run folder (`checkpoints/<pointer>.json`; `best` falls back to
    `last`), a checkpoint folder (model.safetensors + meta.json), a published folder
    (model.safetensors + config.json), its http(s):// or file:// URL, or an entry's name.
    `sha256` pins a published folder through its config.json (`sha256sum config.json`), whose
    `weights_sha256` pins the weights, which are always checked against it; for a
    checkpoint folder or a bare weights file it pins the weights."""
    source = os.fspath(source)
    _refuse_pickle(source)
    sha256 = sha256.lower() if isinstance(sha256, str) else sha256
    if sha256 is not None and not HEX64.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    if source.startswith(HF_PREFIX):
        weights, model_kwargs, meta = hf.download(source, sha256=sha256)
        model = build_model(model_kwargs, weights, map_location)
        model.meta = meta
        return model.eval()
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        folder = _fetch_published(source, sha256)
        weights, model_kwargs, meta = _read_folder(folder, pointer)
        meta.update(source=source, sha256=sha256_of(folder / CONFIG))
    else:
        path = local_path(source)
        if path is None:
            raise ValueError(f"{source}: unsupported URL scheme {scheme!r} (http, https, file or a path)")
        if not path.exists():
            if source in ENTRIES:
                if sha256 and sha256 != ENTRIES[source].sha256:  # the pin names other weights
                    raise ChecksumError(f"entry {source}: its weights' sha256 is {ENTRIES[source].sha256}, "
                                        f"not the pinned {sha256}")
                return create_entry(source, pretrained=True).to(map_location).eval()
            hint = did_you_mean(source, list(ENTRIES), n=4) if path.name == source else ""  # a bare name
            raise FileNotFoundError(f"{source}: no such file or folder, nor an entry's name"
                                    f"{'; ' + hint if hint else ''} (zoo.list_models(pretrained=True) lists them)")
        weights, model_kwargs, meta = _read_folder(path, pointer)
        meta["source"] = str(path)
        _verify_local(weights, meta, sha256)
    model = build_model(model_kwargs, weights, map_location)
    model.meta = meta
    return model.eval()


def _verify_local(weights: Path, meta: dict, sha256: str | None) -> None:
    """A published folder: `sha256` pins its config.json, which pins the weights. Anything
    else: `sha256` pins the weights file."""
    if "weights_sha256" in meta:
        config = weights.parent / CONFIG
        if sha256:
            verify(config, sha256, str(config), remove=False)
        verify(weights, meta["weights_sha256"], str(weights), remove=False)
        meta["sha256"] = sha256 or sha256_of(config)
    else:
        if sha256:
            verify(weights, sha256, str(weights), remove=False)
        meta["sha256"] = sha256


def _read_folder(path: Path, pointer: str) -> tuple[Path, dict, dict]:
    """(weights file, model arguments, meta) of a run / checkpoint / published folder."""
    weights = path if path.is_file() and path.suffix == ".safetensors" else path / WEIGHTS
    folder = weights.parent
    if (folder / "checkpoints").is_dir():
        return _read_folder(resolve_run(folder, pointer), pointer)
    if not weights.is_file():
        pickles = sorted(p for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            _refuse_pickle(str(pickles[0]))
        raise FileNotFoundError(f"{path}: not a run folder (checkpoints/), a checkpoint folder "
                                "(model.safetensors + meta.json) nor a published folder "
                                "(model.safetensors + config.json)")
    if (folder / "meta.json").is_file():
        info = load_meta(folder)
        meta = {"name": folder.parent.parent.name if folder.parent.name == "checkpoints" else folder.name,
                "checkpoint": folder.name}
    elif (folder / CONFIG).is_file():
        return (weights, *read_config(folder / CONFIG, folder.name))
    else:
        raise FileNotFoundError(f"{folder}: {WEIGHTS} without meta.json or {CONFIG} to say "
                                "which model it belongs to")
    return (weights, *model_and_meta(info, meta, str(folder)))


def _refuse_pickle(source: str) -> None:
    if urlparse(source).path.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(
            f"{source}: pickle checkpoints are refused (unpickling can run arbitrary code). "
            "To convert one you trust:\n"
            "    import torch; from safetensors.torch import save_file\n"
            f"    state = torch.load({source!r}, map_location='cpu', weights_only=True)\n"
            "    save_file(state.get('state_dict', state), 'model.safetensors')\n"
            "and put it beside a meta.json or config.json naming the model's arguments.")


def entry_weights(entry: Entry) -> Path:
    """The entry's verified weights file: in place when local (shipped), else in the cache
    (huggingface_hub's for `hf-hub:` URLs)."""
    if entry.url.startswith(HF_PREFIX):
        return hf.entry_weights(entry.url, entry.sha256, entry.name)
    path = local_path(entry.weights_url)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"{entry.name}: weights file {path} does not exist")
        verify(path, entry.sha256, str(path), remove=False)
        return path
    return fetch(entry.weights_url, cache_dir() / "entries" / entry.name / WEIGHTS, entry.sha256)


def _fetch_published(url: str, sha256: str | None) -> Path:
    """A published folder's config.json and weights in the cache, both verified. A pinned
    config.json is taken from the cache when it matches; an unpinned one is downloaded
    again whenever online, so a folder published anew at the same URL is seen."""
    base = re.sub(rf"/({re.escape(WEIGHTS)}|{re.escape(CONFIG)})$", "", url.rstrip("/"))
    folder = cache_dir() / "urls" / hashlib.sha256(base.encode()).hexdigest()[:16]
    config = folder / CONFIG
    if sha256 is None and not offline():
        download(f"{base}/{CONFIG}", config)
    else:
        fetch(f"{base}/{CONFIG}", config, sha256)
    _, meta = read_config(config, folder.name, where=f"{base}/{CONFIG}")
    fetch(f"{base}/{WEIGHTS}", folder / WEIGHTS, meta["weights_sha256"])
    return folder
