"""Publishing: a run folder becomes a self-contained folder a URL can serve, an
entry for the registry, and a row of MODEL_CARD.md.

    entry = publish("runs/unet_camvid", "unet_resnet18_camvid", "dist/unet_resnet18_camvid",
                    url="https://host/models/unet_resnet18_camvid")
    print(entry_snippet(entry))        # what to add to the registry
    update_card("MODEL_CARD.md")       # the "## Zoo entries" section, regenerated

The folder's layout is described in `zoo.hub`. The card's entries section is
generated from the registry only, so the card and the registry cannot drift;
the card's other sections are left as they are.
"""
from __future__ import annotations

import json
import pprint
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from zoo import hub
from zoo.engine.checkpoint import load_meta
from zoo.fileio import atomic_copy, atomic_write_json, atomic_write_text

CARD_SECTION = "## Zoo entries"
_GENERATED = ("<!-- Generated from the registry by `python tools/publish.py --card`: "
              "edit the entries, not this section. -->")


def publish(run_dir, name: str, out, *, url: str | None = None, pointer: str = "best") -> hub.Entry:
    """Write `out/` (config.json, model.safetensors, model.safetensors.sha256) from the run's
    `pointer` checkpoint (`best`, else `last`) and return its registry entry. `url` is where
    the folder will be served; by default the folder's own file:// URL."""
    run_dir, out = Path(run_dir), Path(out)
    hub.check_entry_name(name, f"publish --name {name}")
    ckpt = hub.resolve_checkpoint(run_dir, pointer)
    meta = load_meta(ckpt)
    missing = [k for k in ("model", "classes", "mean", "std") if k not in meta]
    if missing:
        raise ValueError(f"{ckpt}/meta.json: missing {', '.join(missing)}")
    recipe_file = run_dir / "recipe.yaml"
    recipe = _read_yaml(recipe_file) if recipe_file.is_file() else None
    config = {
        "format": hub.PUBLISHED_FORMAT, "name": name,
        "model": {**meta["model"], "encoder_weights": None},  # the weights cover the encoder
        "classes": meta["classes"], "palette": meta.get("palette", []),
        "mean": meta["mean"], "std": meta["std"],
        "eval_protocol": meta.get("eval_protocol", {}), "metrics": meta.get("metrics", {}),
        "dataset": meta.get("dataset", ""), "recipe": recipe,
        "source": {"run": run_dir.resolve().name, "checkpoint": ckpt.name,
                   "iteration": meta.get("iteration")},
    }
    out.mkdir(parents=True, exist_ok=True)
    weights = out / hub.WEIGHTS
    atomic_copy(ckpt / hub.WEIGHTS, weights)
    hub.build_model(config["model"], weights)  # refuse to publish what would not load
    digest = hub.sha256_of(weights)
    atomic_write_text(out / f"{hub.WEIGHTS}.sha256", f"{digest}  {hub.WEIGHTS}\n")
    atomic_write_json(out / "config.json", config)
    url = url or out.resolve().as_uri()
    entry = hub.Entry(
        name=name, model=config["model"], url=url, sha256=digest, classes=config["classes"],
        palette=config["palette"], mean=config["mean"], std=config["std"],
        eval_protocol=config["eval_protocol"],
        metrics={k: v for k, v in config["metrics"].items() if k != "confusion"},
        dataset=config["dataset"], recipe=recipe)
    return entry


def _read_yaml(path: Path):
    import yaml
    return yaml.safe_load(path.read_text())


def entry_snippet(entry: hub.Entry) -> str:
    """The entry as Python for `zoo/hub.py` and as a JSON object for a `$ZOO_INDEX` file."""
    d = {k: v for k, v in entry.to_dict().items() if v not in ("", [], {}, None)}
    fields = ",\n".join(
        f"    {k}=" + pprint.pformat(v, width=90, sort_dicts=False).replace("\n", "\n" + " " * (5 + len(k)))
        for k, v in d.items())
    return (f"# The registry entry; in Python (zoo/hub.py or your own module):\n"
            f"from zoo.hub import Entry, register_entry\n"
            f"register_entry(Entry(\n{fields},\n))\n\n"
            f"# or in a JSON index file named by $ZOO_INDEX ({{\"entries\": [...]}}):\n"
            f"{json.dumps(d)}\n")


# ---------------------------------------------------------------- model card

def render_entries(entries: Mapping[str, hub.Entry] | None = None) -> str:
    """The card's `## Zoo entries` section for `entries` (default: the registry)."""
    entries = hub.ENTRIES if entries is None else entries
    lines = [CARD_SECTION, "", _GENERATED, ""]
    if not entries:
        lines += ["No entries with trained weights are registered yet "
                  "(`zoo.list_models(pretrained=True)` is empty)."]
        return "\n".join(lines) + "\n"
    lines += ["| entry | architecture | encoder | upsampler | training data | protocol | "
              "mIoU (%) | params (M) | speed |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = {name: _describe(entries[name]) for name in sorted(entries)}
    for name, d in rows.items():
        cells = [f"`{name}`", d["arch"], d["encoder"], d["upsample"], d["data"], d["protocol"],
                 d["miou"], d["params"], d["speed"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for name, d in rows.items():
        lines += ["", f"### `{name}`", ""] + [f"- **{k}**: {v}" for k, v in d["details"].items()]
    return "\n".join(lines) + "\n"


def update_card(path="MODEL_CARD.md", entries: Mapping[str, hub.Entry] | None = None) -> bool:
    """Regenerate the card's entries section in place, leaving the other sections as they are.
    Returns whether the file changed."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Model card\n\n"
    section = render_entries(entries)
    new = replace_section(text, section)
    if new == text:
        return False
    atomic_write_text(path, new)
    return True


def card_section(text: str, heading: str = CARD_SECTION) -> str | None:
    """The text of one `## ` section (heading included), or None."""
    m = re.search(rf"^{re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return m.group(0) if m else None


def replace_section(text: str, section: str, heading: str = CARD_SECTION) -> str:
    old = card_section(text, heading)
    if old is None:
        return text.rstrip("\n") + "\n\n" + section
    tail = "\n" if text.find(old) + len(old) < len(text) else ""  # a blank line before the next heading
    return text.replace(old, section + tail, 1)


def _describe(entry: hub.Entry) -> dict:
    from zoo.profile import count_params
    from zoo.registry import builder_params, resolve_name
    builder = resolve_name(entry.arch)
    arch = (builder.func if isinstance(builder, partial) else builder).__name__
    defaults = {k: p.default for k, p in builder_params(entry.arch).items()}
    args = {**defaults, **entry.model}
    params = count_params(hub.build_architecture(entry.model)) / 1e6
    miou = entry.metrics.get("mIoU")
    data = f"{entry.dataset or 'unknown'} ({entry.num_classes} classes)"
    per_class = entry.metrics.get("per_class_iou") or {}
    details = {
        "Weights": f"{entry.url} (sha256 `{entry.sha256}`)" + (f", license {entry.license}" if entry.license else ""),
        "Model": f"`zoo.create({entry.name!r}, pretrained=True)` builds "
                 f"`zoo.create({', '.join(f'{k}={v!r}' for k, v in entry.model.items() if v is not None)})`",
        "Training data": f"{data}: {', '.join(entry.classes)}",
        "Evaluation protocol": _protocol(entry.eval_protocol),
        "Metrics (%)": ", ".join(f"{k} {_pct(v)}" for k, v in entry.metrics.items()
                             if k in ("mIoU", "pixel_acc", "mean_acc")) or "not measured",
        "Per-class IoU (%)": ", ".join(f"{c} {_pct(v)}" for c, v in per_class.items()) or "not measured",
        "Input": f"RGB scaled to [0, 1], normalised with mean {list(entry.mean)} and std {list(entry.std)}",
        "Recipe": "inline in the entry (`zoo.hub.ENTRIES[name].recipe`)" if isinstance(entry.recipe, dict)
                  else (entry.recipe or "not recorded"),
        "Intended use": entry.intended_use or
                        f"research, teaching and benchmarking of semantic segmentation on "
                        f"{entry.dataset or 'its training data'}-like images of its {entry.num_classes} classes; "
                        f"a starting point for fine-tuning.",
        "Limitations": entry.limitations or
                       f"trained on {entry.dataset or 'one data set'} only: expect lower accuracy on other "
                       "cameras, places and classes; the metrics hold for the protocol above only; "
                       "not validated for safety-critical use (driving, medicine).",
    }
    if entry.notes:
        details["Notes"] = entry.notes
    return {"arch": arch, "encoder": str(args.get("encoder", "")), "upsample": str(args.get("upsample", "")),
            "data": data, "protocol": _protocol(entry.eval_protocol),
            "miou": _pct(miou) if miou is not None else "—", "params": f"{params:.2f}",
            "speed": _speed(entry.speed), "details": details}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}"


def _size(v) -> str:
    return "x".join(str(int(x)) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _protocol(p: dict) -> str:
    if not p:
        return "not recorded"
    mode = p.get("mode", "whole")
    text = mode
    if mode == "slide" and p.get("crop_size"):
        text += f" (crop {_size(p['crop_size'])}" + (f", stride {_size(p['stride'])})" if p.get("stride") else ")")
    scales = p.get("scales") or [1.0]
    text += ", scale 1" if list(scales) == [1.0] else f", scales {', '.join(f'{s:g}' for s in scales)}"
    return text + (", flip" if p.get("flip") else "")


def _speed(s: dict) -> str:
    if not s or "img_per_s" not in s:
        return "see Benchmarks"
    where = [str(s["device"])] if s.get("device") else []
    if s.get("size"):
        where.append(_size(s["size"]))
    if s.get("batch"):
        where.append(f"batch {s['batch']}")
    return f"{float(s['img_per_s']):.1f} img/s" + (f" ({', '.join(where)})" if where else "")
