"""Iteration-based training from a recipe, resumable to the bit.

`train(recipe, run_dir)` builds data, model, loss and optimiser from the
recipe, then loops: forward (AMP), loss (+ auxiliary), non-finite check,
backward, clip, step, schedule (and, with `train.ema_decay`, an average of the
weights, which it scores and saves: `zoo/engine/ema.py`). It evaluates every `eval.interval`
iterations, checkpoints every `train.checkpoint_interval` (and keeps the
best by val mIoU), also every `train.checkpoint_minutes` and on Ctrl-C (after
the step under way), and writes `eval.json` and pictures at the end. It holds
the run folder's lock (`zoo/engine/rundir.py`) from start to end.

Exact resume: batches come from a sampler that is a pure function of
(seed, samples already seen), each sample's augmentation is seeded by its
position in that stream (`zoo/engine/data.py`), and the model / optimiser /
scheduler / scaler / RNG states are restored from the newest readable
checkpoint (`zoo/engine/resume.py`). In deterministic mode a run killed and
resumed ends with the same weights as one that never stopped, where the
device has deterministic kernels for every operation the model uses; what
holds is recorded in each checkpoint (`zoo/engine/reproduce.py`). Resumed with
another number of processes, a run continues the same sample stream from the
same position and the schedule from the same iteration (see
`zoo/engine/distributed.py`), but not bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from zoo import factory
from zoo.common.fileio import atomic_write_json
from zoo.data import make_dataset
from zoo.engine import distributed as D
from zoo.engine import rundir
from zoo.engine.data import SeededSamples, StreamSampler, ignore_sigint, loader_workers, val_loader
from zoo.engine.ema import ema_state, make_ema
from zoo.engine.evaluate import evaluate
from zoo.engine.logging import RunLogger
from zoo.engine.losses import build_criterion
from zoo.engine.optim import build_optimizer, build_scheduler
from zoo.engine.packaged import find_recipe
from zoo.engine.recipe import Recipe, load_recipe, recipe_to_dict, save_recipe
from zoo.engine.reproduce import (
    determinism_record,
    reseed_after_build,
    rng_state,
    seed_everything,
    set_rng_state,
    watch_nondeterministic,
)
from zoo.engine.resume import check_classes, check_unchanged, restore
from zoo.engine.rundir import lock_on_main
from zoo.engine.runtime import StopRequest, resolve_speed
from zoo.engine.visualize import write_pictures
from zoo.hub import formats as ckpt

__all__ = ["Trainer", "TrainingError", "train", "train_from_files", "build_model", "build_criterion"]


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, ...); checkpoints stay intact."""


# ----------------------------------------------------------------------------- setup

def build_model(recipe: Recipe, dataset) -> nn.Module:
    args = dict(recipe.model)
    k = len(dataset.classes)
    if args.get("num_classes") is None:
        args["num_classes"] = k
    elif args["num_classes"] != k:
        raise ValueError(f"model.num_classes is {args['num_classes']} but dataset "
                         f"{recipe.data.dataset!r} has {k} classes ({', '.join(dataset.classes[:6])}, ...)")
    if isinstance(args.get("pretrained"), str):  # the recipe's `model.pretrained: <entry or folder>`
        args["init_from"] = args.pop("pretrained")
    model = factory.create(**args)
    if "logit_bias" not in recipe.model and getattr(model, "logit_bias", None) is not None:
        # Started from a calibrated entry: its bias undoes that entry's class prior
        # (`segzoo calibrate`); this run trains without it and is calibrated afresh.
        model.set_logit_bias(None)
        model.config.pop("logit_bias", None)
    return model


def eval_protocol(eval_cfg, result: dict | None = None) -> dict:
    """The recipe's evaluation settings, with the frame size an evaluation `result` fed them."""
    protocol = {"mode": eval_cfg.mode, "crop_size": eval_cfg.crop_size, "stride": eval_cfg.stride,
                "scales": list(eval_cfg.scales), "flip": eval_cfg.flip}
    frame = ((result or {}).get("protocol") or {}).get("frame_size")
    return protocol | ({"frame_size": frame} if frame else {})


# ----------------------------------------------------------------------------- the run

class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = True):
        self.recipe = recipe
        if recipe.train.threads is not None:
            torch.set_num_threads(recipe.train.threads)
        self.device = D.device_for(recipe.train.device)
        self.dist = D.setup(self.device)
        # Rank 0's folder for all: one run folder, whatever each process was told.
        self.run_dir = Path(D.broadcast_object(str(run_dir)))
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.lock = lock_on_main(self.run_dir, self.dist.is_main)
        try:
            self._build(recipe, resume)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let another process train in the folder (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def _build(self, recipe: Recipe, resume: bool) -> None:
        t = recipe.train
        resuming = resume and ckpt.resolve(self.ckpt_dir, "last") is not None
        if resuming:  # before anything is built: a changed model would fail to load its weights
            check_unchanged(recipe, self.run_dir)
        seed_everything(t.seed, t.deterministic)
        self.speed = resolve_speed(t, self.device)

        self.train_set = make_dataset(recipe.data, recipe.data.train_split, train=True)
        self.val_set = make_dataset(recipe.data, recipe.data.val_split, train=False)
        self.classes = list(self.train_set.classes)
        if resuming:
            check_classes(self.ckpt_dir, self.classes)
        self.ignore_index = self.train_set.ignore_index
        self.workers, capped = loader_workers(recipe.data.num_workers)
        self.model = build_model(recipe, self.train_set).to(self.device)
        reseed_after_build(t.seed)  # dropout masks then match across heads (an ablation's upsamplers)
        if t.sync_bn:
            self.model = D.sync_batchnorm(self.model, self.device, self.dist)
        if self.speed["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.model, t.ema_decay)
        self.scored = self.model if self.ema is None else self.ema.module  # evaluated, saved, shipped
        self.criterion = build_criterion(recipe, self.train_set, self.device)

        self.optimizer = build_optimizer(self.model, name=t.optimizer, lr=t.lr,
                                         weight_decay=t.weight_decay, momentum=t.momentum,
                                         betas=tuple(t.betas), encoder_lr_mult=t.encoder_lr_mult)
        self.scheduler = build_scheduler(self.optimizer, name=t.schedule, total_iters=t.iters,
                                         warmup_iters=t.warmup_iters, power=t.power,
                                         min_lr_ratio=t.min_lr_ratio)
        if not t.aux_weight and getattr(self.model, "aux_head", None) is not None:
            # Unused without an aux loss, and DDP refuses parameters that get no gradient.
            self.model.aux_head.requires_grad_(False)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.speed["amp"] == "fp16")
        self.start_iter, self.samples_seen, self.best_miou = 0, 0, -1.0
        self.last_eval: dict | None = None
        self.notes: list[str] = [capped] if capped else []  # said in the log once it is open
        self.nondeterministic_ops: set[str] = set()
        self.saved_at = (self.start_iter, time.monotonic())  # the last checkpoint: iteration, clock
        if resuming:
            self._resume()
        D.check_same("the point to resume from (iteration, samples seen); every process must see "
                     f"the run folder {self.run_dir}", (self.start_iter, self.samples_seen))

        self.global_batch = recipe.data.batch_size * self.dist.world_size
        self.net = D.wrap(self.model, self.device, self.dist)
        if self.speed["compile"]:
            self.net = torch.compile(self.net)

    # -- checkpoints --------------------------------------------------------------------
    def _meta(self, iteration: int) -> dict:
        return {"model": self.model.config, "classes": self.classes,
                "palette": np.asarray(self.train_set.palette).tolist(),
                "mean": list(self.recipe.data.mean), "std": list(self.recipe.data.std),
                "eval_protocol": eval_protocol(self.recipe.eval, self.last_eval),
                "metrics": {k: v for k, v in (self.last_eval or {}).items()
                            if k in ("mIoU", "pixel_acc", "mean_acc", "per_class_iou")},
                "iteration": iteration,
                "dataset": self.recipe.data.dataset, "ignore_index": self.ignore_index,
                "determinism": determinism_record(
                    self.device, self.recipe.train.deterministic, threads=torch.get_num_threads(),
                    processes=self.dist.world_size, nondeterministic_ops=self.nondeterministic_ops)}

    def _train_state(self, iteration: int) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "iteration": iteration,
                "samples_seen": self.samples_seen, "best_miou": self.best_miou,
                "world_size": self.dist.world_size,
                **({} if self.ema is None else {"ema": ema_state(self.model, self.ema)})}

    def save(self, iteration: int, pointers: tuple[str, ...]) -> None:
        D.broadcast_buffers(self.scored)
        if self.dist.is_main:
            path = ckpt.save_checkpoint(self.ckpt_dir, f"iter_{iteration:06d}",
                                        model_state=self.scored.state_dict(), meta=self._meta(iteration),
                                        train_state=self._train_state(iteration))
            for p in pointers:
                info = {"iteration": iteration}
                if p == "best":
                    info["mIoU"] = self.best_miou
                ckpt.set_pointer(self.ckpt_dir, p, path, **info)
        if "last" in pointers:
            self.saved_at = (iteration, time.monotonic())
        D.barrier()

    def _resume(self) -> None:
        r = restore(self.ckpt_dir, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                    scaler=self.scaler, recipe=self.recipe, device=self.device, main=self.dist.is_main,
                    ema=self.ema)
        set_rng_state(r.rng)
        self.start_iter, self.samples_seen, self.best_miou = r.iteration, r.samples_seen, r.best_miou
        self.saved_at = (self.start_iter, time.monotonic())
        self.resumed_from = r.path
        self.notes += r.notes

    # -- loop --------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        d = self.recipe.data
        sampler = StreamSampler(len(self.train_set), d.batch_size, self.recipe.train.seed,
                                start=self.samples_seen, rank=self.dist.rank,
                                world_size=self.dist.world_size)
        workers = self.workers  # capped at the cores (loader_workers)
        return DataLoader(SeededSamples(self.train_set), batch_sampler=sampler, num_workers=workers,
                          worker_init_fn=ignore_sigint if workers > 0 else None,
                          pin_memory=d.pin_memory and self.device.type == "cuda",
                          persistent_workers=d.persistent_workers and workers > 0,
                          prefetch_factor=4 if workers > 0 else None,
                          generator=torch.Generator().manual_seed(self.recipe.train.seed))

    def fit(self) -> dict:
        try:
            with StopRequest(announce=self.dist.is_main) as stop:
                return self._fit(stop)
        finally:
            self.release()

    def _fit(self, stop: StopRequest) -> dict:
        r, t = self.recipe, self.recipe.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(r, self.run_dir / "recipe.yaml")
        log = RunLogger(self.run_dir, total_iters=t.iters, start_iter=self.start_iter,
                        enabled=self.dist.is_main, wandb_cfg=r.log, config=recipe_to_dict(r))
        log.info(f"{type(self.train_set).__name__}: {len(self.train_set)} train / {len(self.val_set)} val "
                 f"images; model {self.model.config.get('name', type(self.model).__name__)} "
                 f"({sum(p.numel() for p in self.model.parameters()) / 1e6:.1f}M parameters); "
                 f"device {self.device}; threads {torch.get_num_threads()}; "
                 f"amp {self.speed['amp']}; processes {self.dist.world_size}; loader workers {self.workers}")
        for note in self.notes:
            log.info(note)
        if self.start_iter:
            log.info(f"resumed from {self.resumed_from} at iteration {self.start_iter}")
        stream = iter(self.loader())
        self.net.train()
        window = {"n": 0, "wait": 0.0, "time": 0.0}
        try:
            for it in range(self.start_iter, t.iters):
                # Which operations lack a deterministic kernel shows in one step: said once, recorded.
                watching = t.deterministic and it == self.start_iter
                with watch_nondeterministic(self.nondeterministic_ops) if watching else contextlib.nullcontext():
                    loss, t_data, step_time = self._step(it, stream)
                if watching and self.nondeterministic_ops:
                    ops = sorted(self.nondeterministic_ops)
                    log.info(f"warning: train.deterministic=true, but on {self.device.type} {', '.join(ops)} "
                             f"{'has' if len(ops) == 1 else 'have'} no deterministic implementation: "
                             "weights will not be bit-identical between runs")
                window["n"] += 1
                window["wait"] += t_data
                window["time"] += step_time
                done = it + 1
                if it == self.start_iter:  # the first sign of life on a slow machine: say what a step costs
                    log.info(f"[{done}/{t.iters}] first step {step_time:.1f} s ({t_data:.1f} s of it "
                             f"waiting for data); a progress line every {t.log_interval} iterations")
                if done % t.log_interval == 0 or done == t.iters:
                    log.train_step(it, {"iter": done, "loss": D.mean(loss.detach()).item(),
                                        "lr": self.optimizer.param_groups[-1]["lr"],
                                        "img_s": self.global_batch * window["n"] / window["time"],
                                        "data_wait": window["wait"] / window["time"]})
                    window = {"n": 0, "wait": 0.0, "time": 0.0}
                pointers = []
                if done % r.eval.interval == 0 or done == t.iters:
                    self.last_eval = self.evaluate()
                    log.eval_result(it, self.last_eval, self.classes)
                    if self.last_eval["mIoU"] > self.best_miou:
                        self.best_miou = self.last_eval["mIoU"]
                        pointers.append("best")
                    self.net.train()
                (at, clock), minutes = self.saved_at, t.checkpoint_minutes
                due = minutes is not None and done > at and time.monotonic() - clock >= 60 * minutes
                due, stopping = D.any_true([due, stop.requested], self.device)  # all ranks alike
                if done % t.checkpoint_interval == 0 or done == t.iters or due or stopping:
                    pointers.append("last")
                if pointers:
                    self.save(done, tuple(pointers))
                if stopping:
                    raise KeyboardInterrupt
            result = self.finish(log)
        finally:
            log.close()
        return result

    def _step(self, it: int, stream) -> tuple[torch.Tensor, float, float]:
        """One optimisation step; returns (loss, seconds waiting for data, seconds in all)."""
        t = self.recipe.train
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.speed["amp"])
        t0 = time.perf_counter()
        batch = next(stream)
        t_data = time.perf_counter() - t0
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["mask"].to(self.device, non_blocking=True)
        if self.speed["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            # No aux head output when its weight is 0: DDP refuses parameters left unused.
            logits, aux = self.net(x, aux=True) if t.aux_weight else (self.net(x), None)
        loss = self.criterion(logits.float(), y, None if aux is None else aux.float())
        finite = bool(torch.isfinite(loss))
        if not D.all_true(finite, self.device):  # all ranks stop together
            last = ckpt.resolve(self.ckpt_dir, "last")
            value = loss.item() if not finite else "on another process"
            raise TrainingError(
                f"non-finite loss ({value}) at iteration {it + 1}; stopped. "
                + (f"The last good checkpoint {last} is intact." if last else
                   "No checkpoint had been written yet.")
                + " Lower train.lr, set train.grad_clip, or use train.amp=off.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.samples_seen += self.global_batch
        return loss, t_data, time.perf_counter() - t0

    def evaluate(self, model: nn.Module | None = None) -> dict:
        e, model = self.recipe.eval, model or self.scored
        D.broadcast_buffers(model)  # one model on all ranks, whose shards are summed
        loader = val_loader(self.val_set, self.recipe.data, e, self.dist)
        return evaluate(model, loader, num_classes=len(self.classes), class_names=self.classes,
                        ignore_index=self.ignore_index, device=self.device, mode=e.mode, crop_size=e.crop_size,
                        stride=e.stride, scales=tuple(e.scales), flip=e.flip)

    def finish(self, log) -> dict:
        if self.last_eval is None:  # resumed after the last iteration: evaluate again
            self.last_eval = self.evaluate()
        last = ckpt.resolve(self.ckpt_dir, "last")
        result = {**self.last_eval, "iteration": self.recipe.train.iters, "best_mIoU": self.best_miou,
                  "checkpoint": str(last)}
        if self.ema is not None:  # what the average gained, measured on the same run
            raw = self.evaluate(self.model)
            result["without_ema"] = {k: v for k, v in raw.items() if k in ("mIoU", "pixel_acc", "per_class_iou")}
            log.info(f"without the average (train.ema_decay): val mIoU {raw['mIoU']:.4f}")
        if self.dist.is_main:
            result["weights_sha256"] = ckpt.weights_sha256(last)  # the weights scored (publish --eval)
            atomic_write_json(self.run_dir / "eval.json", result)
            pictures = write_pictures(self.scored, self.val_set, self.run_dir / "pictures",
                                      self.last_eval, self.classes, self.device,
                                      self.recipe.log.num_images, eval_protocol(self.recipe.eval))
            log.images(self.recipe.train.iters - 1, pictures)
        D.barrier()
        return result


def train(recipe: Recipe, run_dir: Path, *, resume: bool = True) -> dict:
    try:
        return Trainer(recipe, run_dir, resume=resume).fit()
    finally:
        D.cleanup()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; its message names the folder, the iteration and the resume command."""


def train_from_files(recipe_path, overrides=(), run_dir=None, resume: bool = False, *,
                     name: str | None = None, fresh: bool = False) -> dict:
    """What `segzoo train` does: load and check the recipe (a file, or a packaged
    recipe's name: `zoo/engine/packaged.py`), pick the run folder (`zoo/engine/rundir.py`:
    the same command names the same folder, so running it again resumes), train,
    and print the final metrics."""
    recipe = load_recipe(find_recipe(recipe_path), overrides)
    folder = rundir.pick_run_dir(recipe_path, overrides, run_dir=run_dir, name=name, resume=resume,
                                 fresh=fresh)
    try:
        result = train(recipe, folder, resume=True)
    except KeyboardInterrupt:
        command = rundir.resume_command(recipe_path, overrides, run_dir=run_dir, name=name)
        raise Interrupted(rundir.interrupted_message(folder, command)) from None
    if D.DistInfo().is_main and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"run_dir": str(folder), "mIoU": round(result["mIoU"], 4),
                          "pixel_acc": round(result["pixel_acc"], 4)}))
    return result
