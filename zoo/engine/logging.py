"""Run logging: console progress, metrics.jsonl always, wandb when asked.

metrics.jsonl holds one row per logged iteration (training rows, evaluation
rows): a run resumed at iteration N first drops the rows after N, which the
resumed run writes again, so no iteration appears twice.

wandb runs offline when no API key is configured (`WANDB_API_KEY` unset and
no `wandb login` key in ~/.netrc) and `WANDB_MODE` is not set, so a run never
blocks on the network; sync later with `wandb sync <run>/wandb/offline-run-*`.
The process environment is left as it was. The confusion matrix is logged as
`confusion_matrix`, apart from the frames logged as `predictions`.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from zoo.common.fileio import atomic_write_text

BOUNDARY_KEYS = ("boundary_iou", "trimap_miou")


def boundary_text(result: dict) -> str:
    """"  boundary IoU 0.4120  trimap mIoU 0.5531" for the keys the result has."""
    names = {"boundary_iou": "boundary IoU", "trimap_miou": "trimap mIoU"}
    return "".join(f"  {names[k]} {result[k]:.4f}" for k in BOUNDARY_KEYS if k in result)


class RunLogger:
    def __init__(self, run_dir: Path, *, total_iters: int, start_iter: int = 0, enabled: bool = True,
                 wandb_cfg=None, config: dict | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.total, self.start = total_iters, start_iter
        self.t0 = time.perf_counter()
        self.wandb = None
        self.bar = None
        if not enabled:
            return
        _drop_rows_after(self.path, start_iter)
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_iters, initial=start_iter, dynamic_ncols=True, desc="train")
        if wandb_cfg is not None and wandb_cfg.wandb:
            self.wandb = _init_wandb(run_dir, wandb_cfg, config)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))},
                           step=row.get("iter"))

    def train_step(self, it: int, row: dict) -> None:
        """Log a training row and refresh the progress line (loss, lr, img/s, ETA)."""
        self.write(row)
        if not self.enabled:
            return
        done = it + 1 - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - it - 1)
        text = (f"loss {row['loss']:.4f}  lr {row['lr']:.2e}  {row['img_s']:.1f} img/s  "
                f"data {row['data_wait']:.0%}  eta {_fmt(eta)}")
        if self.bar is not None:
            self.bar.n = it + 1
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print(f"[{it + 1}/{self.total}] {text}", flush=True)

    def info(self, text: str) -> None:
        if self.enabled:  # flushed: stdout piped to a file or `tee` is block-buffered
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)

    def eval_result(self, it: int, result: dict, class_names) -> None:
        row = {"iter": it + 1, "mIoU": result["mIoU"], "pixel_acc": result["pixel_acc"],
               "mean_acc": result["mean_acc"]}
        row.update({k: result[k] for k in BOUNDARY_KEYS if k in result})
        self.write({**row, "per_class_iou": result["per_class_iou"]})
        self.info(f"[{it + 1}/{self.total}] val mIoU {result['mIoU']:.4f}  "
                  f"pixel acc {result['pixel_acc']:.4f}" + boundary_text(result))
        if self.wandb is not None:
            import wandb
            per_class = {f"iou/{k}": v for k, v in result["per_class_iou"].items() if v is not None}
            cm = result.get("confusion")
            extra = {}
            if cm is not None:
                extra["confusion"] = wandb.Table(columns=["truth"] + list(class_names),
                                                 data=[[n] + r for n, r in zip(class_names, cm)])
            self.wandb.log({**per_class, **extra}, step=it + 1)

    def images(self, it: int, pictures: list[Path]) -> None:
        if self.wandb is not None and pictures:
            import wandb
            frames = [p for p in pictures if Path(p).name != "confusion.png"]
            logged = {"predictions": [wandb.Image(str(p)) for p in frames]} if frames else {}
            logged.update({"confusion_matrix": wandb.Image(str(p)) for p in pictures
                           if Path(p).name == "confusion.png"})  # not a frame among the frames
            self.wandb.log(logged, step=it + 1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _drop_rows_after(path: Path, iteration: int) -> None:
    """Keep the rows of iterations <= `iteration` (and no half-written last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short
        if isinstance(row, dict) and isinstance(row.get("iter"), int) and row["iter"] <= iteration:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def _logged_in() -> bool:
    """An API key in the environment, or the one `wandb login` keeps in ~/.netrc (or $NETRC)
    for the wandb host ($WANDB_BASE_URL, default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):  # no ~/.netrc, or one wandb would not read either
        return False


def _init_wandb(run_dir: Path, cfg, config):
    import wandb
    offline = os.environ.get("WANDB_MODE") is None and not _logged_in()  # never block on the network
    return wandb.init(project=cfg.project, entity=cfg.entity, group=cfg.group,
                      name=cfg.name or Path(run_dir).name, dir=str(run_dir), config=config,
                      resume="allow", id=_run_id(run_dir), **({"mode": "offline"} if offline else {}))


def _run_id(run_dir: Path) -> str:
    """A stable wandb id per run folder, so a resumed run continues its curve."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    import uuid
    rid = uuid.uuid4().hex[:12]
    path.write_text(rid + "\n")
    return rid


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
