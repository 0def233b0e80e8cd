"""Distributed training on CPU: two gloo processes, as CI runs them.

- the sample stream is the same whatever the number of processes;
- after some DDP steps both ranks hold the same weights and buffers;
- evaluation sharded over two ranks equals single-process evaluation;
- `torchrun --nproc_per_node=2 tools/train.py` runs, and its run resumes
  with one process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, *args, nprocs: int = 2, attempts: int = 3) -> None:
    """Run fn(rank, *args) in `nprocs` gloo processes, as torchrun would set them up. The port
    `free_port` found can be taken by another process before rank 0 listens on it (a busy CI
    machine): that failure, and only it, is retried on another port."""
    for attempt in range(attempts):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nprocs),
               "OMP_NUM_THREADS": "1", "ZOO_DIST_TIMEOUT": "120"}
        try:
            mp.spawn(_entry, args=(env, fn, args), nprocs=nprocs, join=True)
            return
        except mp.ProcessRaisedException as err:
            if attempt == attempts - 1 or not _port_taken(str(err)):
                raise


def _port_taken(message: str) -> bool:
    return "EADDRINUSE" in message or "address already in use" in message.lower()


def _entry(rank, env, fn, args):
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        from zoo.engine import distributed as D
        D.cleanup()


# ----------------------------------------------------------------------------- sampler

def _stream(n, batch, world, start, steps):
    """The global stream as the ranks see it: per step, rank 0's slice then rank 1's ..."""
    from zoo.engine.trainer import StreamSampler
    ranks = [iter(StreamSampler(n, batch, seed=5, start=start, rank=r, world_size=world))
             for r in range(world)]
    return [key for _ in range(steps) for it in ranks for key in next(it)]


@pytest.mark.parametrize("n", [10, 12])
def test_stream_is_the_same_for_any_number_of_processes(n):
    one = _stream(n, 2, 1, 0, 12)  # 24 samples: more than two epochs of 10 or 12
    assert _stream(n, 2, 2, 0, 6) == one
    assert _stream(n, 1, 3, 0, 8) == one
    # a 2-process run of batch 2 stopped after 3 steps (12 samples) goes on with 1 process
    assert _stream(n, 2, 2, 0, 3) + _stream(n, 2, 1, 12, 6) == one
    # every epoch is a permutation of the data set
    for e in range(2):
        assert sorted(i for i, (_, epoch, _) in one if epoch == e) == list(range(n))


# ----------------------------------------------------------------------------- DDP weights

def tiny_recipe(**train):
    from zoo.engine.recipe import recipe_from_dict
    return recipe_from_dict({
        "model": {"name": "pspnet", "encoder": "test_resnet", "encoder_weights": None,
                  "head_channels": 8, "aux_channels": 8},
        "data": {"dataset": "synthetic", "batch_size": 2, "num_workers": 0,
                 "options": {"num_images": 10, "size": 40}},
        "train": {"iters": 3, "seed": 1, "lr": 0.01, "log_interval": 1, "checkpoint_interval": 3,
                  "device": "cpu", "aux_weight": 0.4, **train},
        "eval": {"interval": 2, "max_images": 3},
        "log": {"num_images": 1},
    })


CASES = {"aux_sync_bn": {"aux_weight": 0.4, "sync_bn": True},  # SyncBN falls back on CPU
         "no_aux": {"aux_weight": 0.0}}  # PSPNet's aux head then gets no gradient


def _train_and_dump(rank, out):
    from safetensors.torch import save_file

    from zoo.engine.trainer import Trainer
    for name, train in CASES.items():  # one spawn for all cases: starting processes is the cost
        trainer = Trainer(tiny_recipe(**train), Path(out) / name)
        assert trainer.net is not trainer.model  # wrapped in DistributedDataParallel
        trainer.fit()
        state = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(Path(out) / f"{name}.rank{rank}.safetensors"))

    # Rank 1's labels all void (crops of unlabelled regions), main and aux: it adds a zero
    # that reaches every parameter, so both ranks go on in step.
    from zoo.engine import trainer as T
    real = T.build_criterion
    if rank == 1:
        def void_criterion(*a):
            criterion = real(*a)
            return lambda logits, y, aux=None: criterion(logits, torch.full_like(y, 255), aux)
        T.build_criterion = void_criterion
    trainer = Trainer(tiny_recipe(), Path(out) / "void")
    trainer.fit()
    state = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(Path(out) / f"void.rank{rank}.safetensors"))
    T.build_criterion = real

    # A non-finite loss on rank 1 alone stops both ranks (none waits forever for the other).
    if rank == 1:
        real = T.build_criterion
        T.build_criterion = lambda *a: (lambda *b: real(*a)(*b) * float("nan"))
    try:
        Trainer(tiny_recipe(), Path(out) / "nan").fit()
    except T.TrainingError as e:
        Path(out, f"nan.rank{rank}.txt").write_text(str(e))


@pytest.mark.train
def test_ranks_hold_identical_weights_after_ddp_steps(tmp_path, capfd):
    from safetensors.torch import load_file

    from zoo.hub import formats as ckpt
    spawn(_train_and_dump, str(tmp_path))
    err = capfd.readouterr().err
    assert err.count("train.sync_bn=true is ignored on CPU") == 1  # one line, from rank 0

    for name in [*CASES, "void"]:
        run = tmp_path / name
        r0, r1 = (load_file(str(tmp_path / f"{name}.rank{r}.safetensors")) for r in (0, 1))
        assert r0.keys() == r1.keys()
        assert any(k.endswith("running_mean") for k in r0)  # BatchNorm statistics compared too
        differ = [k for k in r0 if not torch.equal(r0[k], r1[k])]
        assert not differ, f"{name}: ranks disagree on {differ[:5]}"
        saved = ckpt.read_weights(ckpt.resolve(run / "checkpoints"))
        assert saved.keys() == r0.keys() and all(torch.equal(saved[k], r0[k]) for k in r0)
        state = ckpt.load_train_state(ckpt.resolve(run / "checkpoints"))
        assert (state["iteration"], state["samples_seen"], state["world_size"]) == (3, 12, 2)

        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["iter"] for r in rows if "loss" in r] == [1, 2, 3]  # rank 0 alone logs
        assert [r["iter"] for r in rows if "mIoU" in r] == [2, 3]
        result = json.loads((run / "eval.json").read_text())
        assert result["num_pixels"] == 3 * 40 * 40  # each val image counted once over the shards
        pictures = sorted(p.name for p in (run / "pictures").iterdir())
        assert pictures == ["00_val_000000.png", "confusion.png"]

    assert (tmp_path / "nan.rank1.txt").read_text().startswith("non-finite loss (nan) at iteration 1")
    assert (tmp_path / "nan.rank0.txt").read_text().startswith(
        "non-finite loss (on another process) at iteration 1")


# ----------------------------------------------------------------------------- evaluation

NUM_CLASSES = 4


def _eval_data(n: int):
    g = torch.Generator().manual_seed(n)
    data = []
    for i in range(n):
        mask = torch.randint(0, NUM_CLASSES, (9, 11), generator=g)
        mask[torch.rand(9, 11, generator=g) < 0.1] = 255  # some ignored pixels
        data.append({"image": torch.randn(3, 9, 11, generator=g), "mask": mask, "name": f"im{i}"})
    return data


def _eval_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.Conv2d(8, NUM_CLASSES, 1))


EVAL_SETTINGS = [(7, {}), (7, {"scales": (1.0, 0.75), "flip": True}), (1, {})]  # 1: a shard is empty


def _evaluate(dist_info, n, protocol):
    from zoo.engine.evaluate import evaluate
    from zoo.engine.trainer import val_loader
    data_cfg = SimpleNamespace(num_workers=0, pin_memory=False)
    eval_cfg = SimpleNamespace(max_images=None, batch_size=1)
    loader = val_loader(_eval_data(n), data_cfg, eval_cfg, dist_info)
    return evaluate(_eval_model().eval(), loader, num_classes=NUM_CLASSES, **protocol)


def _collectives(rank: int) -> dict:
    from zoo.engine import distributed as D
    cpu = torch.device("cpu")
    seen = {"all_true": [D.all_true(True, cpu), D.all_true(rank == 0, cpu)],
            "any_true": D.any_true([rank == 1, False], cpu),
            "mean": D.mean(torch.tensor(float(rank))).item(),
            "broadcast": D.broadcast_object(f"from rank {rank}")}
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(rank)
    D.broadcast_buffers(bn)
    seen["buffer"] = bn.running_mean.tolist()
    try:
        D.check_same("the answer", 42 + rank)
    except RuntimeError as e:
        seen["error"] = str(e)
    D.check_same("the question", "same")  # agreeing ranks pass
    return seen


def _two_ranks(rank, out):
    from zoo.engine.distributed import setup
    info = setup(torch.device("cpu"))
    assert (info.rank, info.world_size) == (rank, 2)
    seen = {"eval": [_evaluate(info, n, protocol) for n, protocol in EVAL_SETTINGS],
            "collectives": _collectives(rank)}
    Path(out, f"{rank}.json").write_text(json.dumps(seen))


def _rank_joins(rank, out):
    from zoo.engine.distributed import setup
    info = setup(torch.device("cpu"))
    Path(out, f"{rank}.txt").write_text(f"{info.rank}/{info.world_size} on {os.environ['MASTER_PORT']}")


@pytest.mark.train
def test_spawn_tries_another_port_when_the_first_is_taken(tmp_path, monkeypatch):
    with socket.socket() as held:  # a port another process took after free_port() saw it free
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setitem(globals(), "free_port", lambda: next(ports, None) or _os_port())
        spawn(_rank_joins, str(tmp_path))
    seen = sorted(p.read_text() for p in tmp_path.glob("*.txt"))
    assert [s.split(" on ")[0] for s in seen] == ["0/2", "1/2"]
    assert all(s.split(" on ")[1] != str(taken) for s in seen)


def _os_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What each of two gloo ranks saw (one spawn serves the tests below)."""
    out = tmp_path_factory.mktemp("two_ranks")
    spawn(_two_ranks, str(out))
    return [json.loads((out / f"{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.train
def test_sharded_evaluation_equals_single_process(two_ranks):
    from zoo.engine.distributed import DistInfo
    for (n, protocol), got0, got1 in zip(EVAL_SETTINGS, two_ranks[0]["eval"], two_ranks[1]["eval"]):
        want = json.loads(json.dumps(_evaluate(DistInfo(), n, protocol)))
        assert got0 == got1  # every rank gets the summed result
        assert got0["confusion"] == want["confusion"]
        assert got0["num_pixels"] == want["num_pixels"] > 0
        assert got0["mIoU"] == want["mIoU"] and got0["per_class_iou"] == want["per_class_iou"]
        # boundary counts are summed like the matrix; every rank reports every d met
        for key in ("per_class_boundary_iou", "per_class_trimap_iou", "boundary_params"):
            assert got0[key] == want[key]
        assert got0["boundary_params"]["trimap_pixels"] > 0


@pytest.mark.train
def test_collective_helpers(two_ranks):
    for seen in (r["collectives"] for r in two_ranks):
        assert seen["all_true"] == [True, False]
        assert seen["any_true"] == [True, False]
        assert seen["mean"] == 0.5
        assert seen["broadcast"] == "from rank 0"
        assert seen["buffer"] == [0.0, 0.0]
        assert seen["error"] == "processes disagree on the answer (rank 0: 42, rank 1: 43)"


# ----------------------------------------------------------------------------- torchrun

def torchrun(nproc: int, *args, timeout=240, attempts: int = 3):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ZOO_DIST_TIMEOUT": "120"}
    for attempt in range(attempts):  # as `spawn`: a port taken before the launcher listens is retried
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(REPO / "tools" / "train.py"),
               *map(str, args)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or not _port_taken(proc.stdout + proc.stderr):
            break
    if proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.train
def test_torchrun_two_processes_then_resume_with_one(tmp_path):
    from tests.engine.test_train import assert_complete_run, run_tool, write_recipe
    from zoo.hub import formats as ckpt
    # 10 images, global batch 4: the third batch straddles two epochs
    recipe = write_recipe(tmp_path / "r.yaml", "synthetic", None, iters=3, crop=None,
                          options={"num_images": 10, "size": 40},
                          train={"checkpoint_interval": 3, "log_interval": 1, "device": "cpu"},
                          eval={"interval": 3, "max_images": 3})
    run = tmp_path / "run"
    out = torchrun(2, recipe, "--run-dir", run)
    assert json.loads(out.stdout.strip().splitlines()[-1])["run_dir"] == str(run)  # printed once
    assert out.stdout.count('"run_dir"') == 1 and "processes 2" in out.stdout
    state = ckpt.load_train_state(ckpt.resolve(run / "checkpoints"))
    assert (state["iteration"], state["samples_seen"], state["world_size"]) == (3, 12, 2)
    assert_complete_run(run, 6)

    out = run_tool("train.py", recipe, "train.iters=5", "--run-dir", run)  # one process
    assert f"resumed from {run / 'checkpoints' / 'iter_000003'} at iteration 3" in out.stdout
    assert "processes 1" in out.stdout
    state = ckpt.load_train_state(ckpt.resolve(run / "checkpoints"))
    assert (state["iteration"], state["samples_seen"], state["world_size"]) == (5, 16, 1)
    assert state["scheduler"]["last_epoch"] == 5  # the schedule went on by iteration
    result = assert_complete_run(run, 6)
    assert result["iteration"] == 5 and result["num_pixels"] == 3 * 40 * 40
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert [r["iter"] for r in rows if "mIoU" in r] == [3, 5]


def test_torchrun_with_one_process_joins_the_group_and_wraps(monkeypatch):
    """`torchrun --nproc_per_node=1` is how one GPU rehearses the multi-GPU path: it must
    join a process group and wrap the model in DDP, where a plain process does neither."""
    from zoo.engine import distributed as D
    for var in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not D.setup(torch.device("cpu")).enabled and not D.initialized()  # plain process
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "rehearsal")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    try:
        info = D.setup(torch.device("cpu"))
        assert info.enabled and info.world_size == 1 and D.initialized()
        wrapped = D.wrap(torch.nn.Linear(2, 2), torch.device("cpu"), info)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    finally:
        D.cleanup()
    assert not D.initialized()
    # On a GPU the group binds the rank to cuda:LOCAL_RANK, which must carry its index
    # (init_process_group refuses device_id=cuda): checked here with CUDA pretended present.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    assert D.device_for("auto") == torch.device("cuda", 0) and D.device_for("cuda").index == 0
