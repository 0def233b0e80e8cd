"""Publishing: a run folder (or a shipped entry) becomes a self-contained folder a URL
can serve, or a Hugging Face Hub repository.

    entry = publish("runs/unet_camvid", "unet_resnet10t_camvid", "dist/unet_resnet10t_camvid",
                    url="https://host/models/unet_resnet10t_camvid")
    commit, digest = push_to_hub("runs/unet_camvid", "org/unet_resnet10t_camvid")

The folder's layout is described in `zoo.hub.load`; a Hub repository holds config.json,
model.safetensors and a README.md model card (see `zoo.hub.hf`). Shipping inside the
package is `zoo.lab.ship`; the model card's entries section is `zoo.lab.card`. What is
published carries no local absolute path (the recipe's become placeholders).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from zoo.common.fileio import atomic_copy, atomic_write_json
from zoo.hub import hf
from zoo.hub import load as hub
from zoo.hub.formats import load_meta, resolve_run
from zoo.lab.card import protocol
from zoo.lab.ship import evaluated_metrics, placeholders


def run_config(run_dir, name: str, pointer: str = "best", eval_file=None) -> tuple[dict, Path]:
    """(config.json contents, weights file) of the run's `pointer` checkpoint (`best`, else
    `last`). With `eval_file` (a `segzoo eval` result of that checkpoint) its metrics and
    protocol are published, and the logit bias it was measured with (`segzoo eval
    --calibration`) goes into the model's arguments, as `--ship --eval` does."""
    run_dir = Path(run_dir)
    hub.check_entry_name(name, f"publish --name {name}")
    ckpt = resolve_run(run_dir, pointer)
    meta = load_meta(ckpt)
    missing = [k for k in ("model", "classes", "mean", "std") if k not in meta]
    if missing:
        raise ValueError(f"{ckpt}/meta.json: missing {', '.join(missing)}")
    model = {**meta["model"], "encoder_weights": None}  # the weights cover the encoder
    if eval_file is None:
        metrics = {k: v for k, v in meta.get("metrics", {}).items() if k != "confusion"}
        protocol = meta.get("eval_protocol", {})
    else:
        metrics, protocol, bias = evaluated_metrics(ckpt, meta, Path(eval_file))
        if bias is not None:
            model["logit_bias"] = bias
    recipe_file = run_dir / "recipe.yaml"
    config = {
        "format": hub.PUBLISHED_FORMAT, "name": name, "model": model,
        "classes": meta["classes"], "palette": meta.get("palette", []),
        "mean": meta["mean"], "std": meta["std"],
        "eval_protocol": protocol, "metrics": metrics,
        "dataset": meta.get("dataset", ""),
        "recipe": placeholders(_read_yaml(recipe_file)) if recipe_file.is_file() else None,
        "source": {"run": run_dir.resolve().name, "checkpoint": ckpt.name,
                   "iteration": meta.get("iteration")},
    }
    return config, ckpt / hub.WEIGHTS


def entry_config(entry: hub.Entry) -> tuple[dict, Path]:
    """(config.json contents, verified weights file) of a registered entry."""
    config = {"format": hub.PUBLISHED_FORMAT, "name": entry.name, "model": entry.model,
              "classes": entry.classes, "palette": entry.palette, "mean": entry.mean, "std": entry.std,
              "eval_protocol": entry.eval_protocol, "metrics": entry.metrics, "dataset": entry.dataset,
              "recipe": entry.recipe, "source": {"entry": entry.name, "sha256": entry.sha256}}
    return config, hub.entry_weights(entry)


def publish(run_dir, name: str, out, *, url: str | None = None, pointer: str = "best",
            eval_file=None) -> hub.Entry:
    """Write `out/` (config.json, model.safetensors) from the run's `pointer` checkpoint and
    return its registry entry. `url` is where the folder will be served; by default the
    folder's own file:// URL. `zoo.load(url, sha256=<sha256 of out/config.json>)` loads it.
    `eval_file`: publish that evaluation's metrics (and logit bias), see `run_config`."""
    config, src = run_config(run_dir, name, pointer, eval_file)
    out = Path(out)
    digest = _write_folder(config, src, out)
    return hub.Entry(
        name=name, model=config["model"], url=url or out.resolve().as_uri(), sha256=digest,
        classes=config["classes"], palette=config["palette"], mean=config["mean"], std=config["std"],
        eval_protocol=config["eval_protocol"], metrics=config["metrics"], dataset=config["dataset"],
        recipe=config["recipe"])


def _write_folder(config: dict, weights_src: Path, out: Path) -> str:
    """config.json (naming the weights' sha256) and model.safetensors into `out`, checked to
    load; returns the weights' sha256."""
    hub.build_model(config["model"], weights_src)  # refuse what would not load, before `out` changes
    out.mkdir(parents=True, exist_ok=True)
    weights = out / hub.WEIGHTS
    atomic_copy(weights_src, weights)
    digest = hub.sha256_of(weights)
    atomic_write_json(out / hub.CONFIG, {**config, "weights_sha256": digest})
    return digest


def push_to_hub(source, repo_id: str, *, token: str | None = None, private: bool = False,
                revision: str | None = None, pointer: str = "best", eval_file=None) -> tuple[str, str]:
    """Upload a run folder or a registered entry (`source`) to the Hugging Face Hub repository
    `repo_id` as config.json, model.safetensors and a README.md model card. Returns
    (commit id, the sha256 of config.json, which pins the folder:
    `zoo.load(f"hf-hub:{repo_id}@{commit}", sha256=...)`). `eval_file`, for a run folder:
    publish that evaluation's metrics and logit bias (see `run_config`)."""
    hf.parse(repo_id)
    name = repo_id.split("/")[1]
    if Path(source).is_dir():
        config, src = run_config(source, name, pointer, eval_file)
    elif eval_file is not None:
        raise ValueError(f"--eval {eval_file}: {source} is an entry, which carries its own evaluation; "
                         "--eval goes with a run folder")
    else:
        config, src = entry_config(hub.get_entry(str(source)))
    with tempfile.TemporaryDirectory(prefix="segzoo-push-") as tmp:
        folder = Path(tmp)
        _write_folder(config, src, folder)
        digest = hub.sha256_of(folder / hub.CONFIG)
        (folder / "README.md").write_text(hub_card(config, repo_id, digest))
        commit = hf.push(folder, repo_id, token=token, private=private, revision=revision)
    return commit, digest


def hub_card(config: dict, repo_id: str, digest: str) -> str:
    """README.md for the Hub: metadata block, how to load, metrics, classes, recipe."""
    import yaml
    m = config.get("metrics") or {}
    per_class = m.get("per_class_iou") or {}
    front = {"library_name": "segzoo", "license": "apache-2.0",
             "tags": ["image-segmentation", "semantic-segmentation", "segzoo", config["model"]["name"]],
             "pipeline_tag": "image-segmentation"}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {config['name']}", "",
             f"A {config['model']['name']} semantic-segmentation model of the segzoo model zoo, "
             f"trained on {config.get('dataset') or 'its data set'} ({len(config['classes'])} classes).", "",
             "## How to load", "", "```python", "import zoo",
             f'model = zoo.load("hf-hub:{repo_id}", sha256="{digest}")  # pin a commit with @<revision>',
             f'model = zoo.create("hf-hub:{repo_id}", pretrained=True, num_classes=5)  # to fine-tune',
             "```", "",
             "`sha256` is that of config.json, which names the weights' sha256 (`weights_sha256`): one "
             "digest pins the configuration and the weights. Input: RGB scaled to [0, 1], normalised with mean "
             f"{config['mean']} and std {config['std']}.", "",
             "## Metrics", "",
             f"Evaluation: {protocol(config.get('eval_protocol') or {})}.", "",
             "| mIoU | pixel acc | mean acc |", "| --- | --- | --- |",
             f"| {_fmt(m.get('mIoU'))} | {_fmt(m.get('pixel_acc'))} | {_fmt(m.get('mean_acc'))} |", "",
             "| class | IoU |", "| --- | --- |"]
    lines += [f"| {c} | {_fmt(per_class.get(c))} |" for c in config["classes"]]
    lines += ["", "## Model", "", "```json", json.dumps(config["model"], indent=2), "```"]
    if config.get("recipe"):
        lines += ["", "## Recipe (resolved)", "", "```yaml",
                  yaml.safe_dump(config["recipe"], sort_keys=False).strip(), "```"]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "—" if v is None else f"{float(v):.3f}"


def _read_yaml(path: Path):
    import yaml
    return yaml.safe_load(path.read_text())
