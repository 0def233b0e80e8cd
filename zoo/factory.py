"""`zoo.create` and `zoo.list_models`: every name a user may give, read top to bottom
(as timm's `_factory.create_model`), above two plain tables: the architectures
(`zoo.models.registry`) and the entries with trained weights (`zoo.hub.entries`).

    zoo.create("pspnet", encoder="resnet50", num_classes=21)          # an architecture
    zoo.create("unet_resnet10t_camvid", pretrained=True)              # an entry, trained
    zoo.create("unet_resnet10t_camvid", pretrained=True, num_classes=5)   # fine-tuning from it
    zoo.create("hf-hub:org/repo@rev", pretrained=True)                # a published repository
    zoo.create("unet_resnet10t_camvid", num_classes=5, init_from="runs/stage1")   # a run's weights

`pretrained` is whether the model comes with its own trained weights (those of the
entry or repository `name` names); `init_from` starts a model from another source's
weights of the same architecture (an entry, `hf-hub:...`, or a local run, checkpoint or
published folder; tensors whose shapes differ, such as a classifier for other classes,
stay fresh), as torchvision separates `weights` from `weights_backbone`. A recipe's
`model.pretrained: <entry or folder>` is `init_from` (zoo.engine.trainer passes it).
`zoo.load(source)` is the other way in: any trained model exactly as it was saved.
"""
from __future__ import annotations

import fnmatch
import warnings

from torch import nn

from zoo.hub import load as hub
from zoo.hub.entries import ENTRIES
from zoo.models import registry


def create(name: str | None = None, pretrained: bool | str = False, *, init_from: str | None = None,
           **kwargs) -> nn.Module:
    """Build a model. `None` keywords keep the defaults.

    - `init_from=<source>`: the model `name` builds (an architecture, or an entry's
      architecture; the source's own when `name` is not given) started from that source's
      weights; tensors whose shapes differ keep fresh values and are named in a warning.
    - `name="hf-hub:org/repo[@rev]"`: the architecture its config.json names; with
      `pretrained=True` its weights too.
    - `name=<entry>` (or `pretrained=True`): the entry's architecture; with `pretrained=True`
      its trained weights and `.meta`. Keywords change it (`num_classes=5` to fine-tune).
    - `name=<architecture or preset>`: fresh weights; unknown keywords are refused by name.

    `pretrained=<source>` is the old spelling of `init_from` (a DeprecationWarning)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(pretrained, str):
        if init_from is not None:
            raise TypeError("create(): give pretrained=True/False and init_from=<source>, not two sources")
        warnings.warn(f"create(pretrained={pretrained!r}): pass init_from={pretrained!r} instead "
                      "(pretrained is True or False)", DeprecationWarning, stacklevel=2)
        pretrained, init_from = False, pretrained or None
    # 1. Start from another model's weights.
    if init_from:
        if name is None or name == init_from:
            if hub.local_weights(init_from) is not None:
                raise TypeError(f"create(init_from={init_from!r}) starts a model from a local run's "
                                "weights: give the model's name (and arguments) too, or zoo.load() it")
            return create(init_from, pretrained=True, **kwargs)  # the entry (or repository) itself
        base = dict(ENTRIES[name].model) if name in ENTRIES else {"name": name}
        return hub.init_from(hub.build_architecture(hub.with_overrides(base, kwargs)), init_from)
    if name is None:
        raise TypeError("create() needs a model name (or init_from=<entry name>)")
    # 2. A repository on the Hugging Face Hub.
    if name.startswith(hub.HF_PREFIX):
        return hub.create_from_hub(name, pretrained=bool(pretrained), **kwargs)
    # 3. An entry: its architecture, with its trained weights when pretrained.
    if pretrained or name in ENTRIES:
        return hub.create_entry(name, pretrained=bool(pretrained), **kwargs)
    # 4. An architecture or preset, fresh.
    if name not in registry.MODELS:
        raise ValueError(registry.MODELS.unknown(name, extra=ENTRIES))
    return registry.build(name, kwargs)


def builder_params(name: str) -> dict:
    """The keyword parameters of the architecture `name` builds (an entry's architecture's
    for an entry), with their defaults; `create`'s own keywords aside."""
    return registry.builder_params(ENTRIES[name].arch if name in ENTRIES else name)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architectures, presets and entries matching a shell-style pattern; with
    `pretrained=True` only the entries, which carry trained weights."""
    names = list(ENTRIES) if pretrained else [*registry.architectures(), *ENTRIES]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
