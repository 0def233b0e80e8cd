"""MODEL_CARD.md's `## Zoo entries` section, generated from the registry's entries.

    update_card("MODEL_CARD.md")       # the section regenerated; the card's other sections kept

Every figure comes from an entry's fields (measured when it was shipped: metrics by
the evaluation, parameters and GFLOPs by `zoo.models.profile`, CPU latency by
`torch.utils.benchmark`), so the card and the registry cannot drift.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from zoo.common.fileio import atomic_write_text
from zoo.hub import entries
from zoo.hub import load as hub
from zoo.hub.download import local_path
from zoo.models.registry import builder_params

CARD_SECTION = "## Zoo entries"
_GENERATED = ("<!-- Generated from the registry by `python tools/publish.py --card` "
              "(and by every `--ship`): edit the entries, not this section. -->")
_COLUMNS = ["entry", "model", "val mIoU", "holdout mIoU", "pixel acc", "per-class IoU", "params (M)",
            "GFLOPs", "CPU latency (ms)", "recipe", "command", "machine", "date"]


def render_entries(entries: Mapping[str, hub.Entry] | None = None) -> str:
    """The card's `## Zoo entries` section for `entries` (default: the registry)."""
    entries = hub.ENTRIES if entries is None else entries
    lines = [CARD_SECTION, "", _GENERATED, ""]
    if not entries:
        lines += ["No entries with trained weights are registered yet "
                  "(`zoo.list_models(pretrained=True)` is empty)."]
        return "\n".join(lines) + "\n"
    lines += ["`zoo.create(NAME, pretrained=True)` builds an entry with its weights; "
              "`zoo.create(NAME, pretrained=True, num_classes=K)` starts a fine-tuning. "
              "IoU and accuracy on the val split, as fractions. *holdout mIoU*: the entry's recipe "
              "retrained without the frames its `data.options.holdout` names (other stretches of road "
              "than training sees) and scored on them, the figure to expect on unseen sequences; val's "
              "frames come from a sequence that training covers too.", "",
              "| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
    for name in sorted(entries):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row(entries[name])) + " |")
    for name in sorted(entries):
        lines += ["", f"### `{name}`", ""] + [f"- **{k}**: {v}" for k, v in details(entries[name]).items()]
    return "\n".join(lines) + "\n"


def row(e: hub.Entry) -> list[str]:
    """One table row; the cells in `_COLUMNS`' order."""
    m, cost, speed = e.metrics, e.cost, e.speed
    per_class = ", ".join(f"{c} {_num(v)}" for c, v in (m.get("per_class_iou") or {}).items())
    held = f"{_num(e.validation['mIoU'])} ({e.validation['holdout']})" if e.validation else "—"
    return [f"`{e.name}`", _model(e), _num(m.get("mIoU")), held, _num(m.get("pixel_acc")), per_class or "—",
            f"{cost['params'] / 1e6:.2f}" if "params" in cost else "—",
            f"{cost['gflops']:.1f} @ {_size(cost.get('size'))}" if "gflops" in cost else "—",
            f"{speed['latency_ms']:.0f} ({speed.get('threads', 1)} thread)" if "latency_ms" in speed else "—",
            f"`{e.recipe_file}`" if e.recipe_file else ("inline" if e.recipe else "—"),
            f"`{e.command}`" if e.command else "—", e.machine or "—", e.date or "—"]


def details(e: hub.Entry) -> dict:
    pictures = [f"[{Path(p).stem}]({p})" for p in e.pictures]
    out = {
        "Load": f"`zoo.create({e.name!r}, pretrained=True)`; architecture "
                "`zoo.create(" + ", ".join(f"{k}={v!r}" for k, v in e.model.items()
                                           if v is not None and k != "logit_bias") + ")`",
        "Weights": f"{_where(e)} (sha256 `{e.sha256}`)" + (f", license {e.license}" if e.license else ""),
        "Classes": f"{e.dataset or 'unknown data'}, {e.num_classes}: {', '.join(e.classes)}",
        "Trained on": trained_on(e),
        "Evaluation": protocol(e.eval_protocol),
        "Input": f"RGB scaled to [0, 1], normalised with mean {list(e.mean)} and std {list(e.std)}",
        "Pictures": ", ".join(pictures) or "none",
        **({"Intended use": e.intended_use} if e.intended_use else {}),
        "Limitations": e.limitations or
                       f"trained on {e.dataset or 'one data set'} only: expect lower accuracy on other "
                       "cameras, places and classes; the metrics hold for the protocol above only; "
                       "not validated for safety-critical use (driving, medicine).",
    }
    v = e.validation
    if v:
        out["Validation"] = (
            f"the recipe retrained without the `holdout: {v['holdout']}` frames scores "
            f"{_num(v['mIoU'])} mIoU on them{' (calibrated on its train split)' if v.get('calibrated') else ''}"
            f" ({v.get('date', 'undated')}" + (f", {v['machine']}" if v.get("machine") else "")
            + (f"; `{v['command']}`" if v.get("command") else "") + "): "
            + ", ".join(f"{c} {_num(x)}" for c, x in v["per_class_iou"].items())
            + f". Against val's {_num(e.metrics.get('mIoU'))}, frames of a sequence training also covers.")
    bias = e.model.get("logit_bias")
    if bias:
        out["Logit bias"] = ("the entry's `logit_bias` argument, added to the logits: it undoes the "
                             "class-weighted loss's prior as `segzoo calibrate` chose it on the train split: "
                             + ", ".join(f"{c} {round(b, 2) + 0.0:+.2f}" for c, b in zip(e.classes, bias)))
        # round, then + 0.0: -0.004 reads +0.00, not "-0.00"
    if e.notes:
        out["Notes"] = e.notes
    return out


def trained_on(e: hub.Entry) -> str:
    """The frames the weights were trained on, from the entry's recipe (its last stage's)."""
    data = (e.recipe or {}).get("data") or {}
    if not data:
        return "not recorded"
    split, val = data.get("train_split", "train"), data.get("val_split", "val")
    holdout = (data.get("options") or {}).get("holdout")
    where = f"{e.dataset or data.get('dataset', 'its data set')}'s `{split}` split"
    if holdout:
        return f"{where}, less the `holdout: {holdout}` frames it was scored on"
    if split in (val, "trainval"):
        return f"{where}: val's frames included, so the val figure is not a held-out one"
    return f"{where}, not val's frames"


def _model(e: hub.Entry) -> str:
    args = {k: p.default for k, p in builder_params(e.arch).items()} | e.model
    return f"{e.arch} / {args.get('encoder', '')} / {_upsample(args.get('upsample'))}"


def _upsample(spec) -> str:
    return spec.get("name", "?") if isinstance(spec, dict) else str(spec)


def _where(e: hub.Entry) -> str:
    path = local_path(e.weights_url)
    if path is not None and path.parent == entries.SHIPPED_INDEX.parent:
        return f"shipped in the package (`zoo/weights/{path.name}`)"
    return f"`{path.name}`" if path is not None else e.url


def _num(v) -> str:
    return "—" if v is None else f"{float(v):.3f}"


def _size(v) -> str:
    return "x".join(str(int(x)) for x in v) if isinstance(v, (list, tuple)) else str(v)


def protocol(p: dict) -> str:
    if not p:
        return "not recorded"
    mode = p.get("mode", "whole")
    text = mode
    if mode == "slide" and p.get("crop_size"):
        text += f" (crop {_size(p['crop_size'])}" + (f", stride {_size(p['stride'])})" if p.get("stride") else ")")
    scales = p.get("scales") or [1.0]
    text += ", scale 1" if list(scales) == [1.0] else f", scales {', '.join(f'{s:g}' for s in scales)}"
    return text + (", flip" if p.get("flip") else "")


# ---------------------------------------------------------------- the file

def update_card(path="MODEL_CARD.md", entries: Mapping[str, hub.Entry] | None = None) -> bool:
    """Regenerate the card's entries section in place, leaving the other sections as they are.
    Returns whether the file changed."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Model card\n\n"
    new = replace_section(text, render_entries(entries))
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
