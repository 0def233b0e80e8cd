"""scripts/gpu_proof.py: the one-command GPU proof runs end to end on a CPU (--dry-run), each
part that needs CUDA saying so; and the CUDA-marked tests it runs on a GPU."""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zoo

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_proof.py"


@pytest.fixture(scope="module")
def proof():
    return runpy.run_path(str(SCRIPT), run_name="gpu_proof")


@pytest.mark.train
@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run's CPU expectations")
def test_dry_run_end_to_end_on_cpu(proof, tmp_path, capsys):
    code = proof["main"](["--out", str(tmp_path), "--dry-run"])
    report = json.loads((tmp_path / "gpu_proof.json").read_text())
    parts = report["parts"]
    assert code == 0, json.dumps(parts, indent=1)
    assert list(parts) == ["cuda_tests", "throughput", "ddp", "camvid"]
    assert parts["cuda_tests"]["status"] == "skipped" and parts["cuda_tests"]["reason"].startswith("needs CUDA")
    rows = parts["throughput"]["rows"]
    assert {(r["arch"], r["mode"], r["impl"]) for r in rows} == {
        (a, m, i) for a in ("unet", "pspnet") for m in ("fp32 eager", "bf16", "bf16 + channels_last")
        for i in ("zoo", "smp")}
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["mfu_train"] is None for r in rows)
    assert parts["throughput"]["skipped_modes"]["bf16 + compile"].startswith("needs CUDA")
    ddp = parts["ddp"]  # torchrun really ran the trainer; on gloo, as a CPU has no nccl
    assert ddp["status"] == "skipped" and ddp["reason"].startswith("needs CUDA") and ddp["world_size"] == 1
    assert ddp["final_loss"] > 0 and 0.0 <= ddp["val_mIoU"] <= 1.0  # the last training row's loss
    camvid = parts["camvid"]
    assert 0.0 <= camvid["val_mIoU"] <= 1.0 and camvid["iters"] == 2
    summary = (tmp_path / "gpu_proof.md").read_text()
    assert summary.startswith("# GPU proof (dry run)") and "| unet | bf16 | zoo |" in summary
    assert "| camvid | skipped |" in summary and "val mIoU" in summary


def test_summary_of_a_gpu_report(proof):
    row = {"arch": "unet", "mode": "bf16 + compile", "impl": "zoo", "train_img_s": 120.0,
           "infer_img_s": 400.0, "mfu_train": 0.21, "mfu_infer": 0.05, "peak_mem_mb": 9000.0}
    report = {"dry_run": False, "machine": {"gpu": "NVIDIA H200", "torch": "2.14.1", "date": "2026-12-05"},
              "seconds": 512.0, "command": "python scripts/gpu_proof.py --out x",
              "parts": {"throughput": {"status": "ok", "seconds": 200.0, "rows": [row]},
                        "camvid": {"status": "ok", "seconds": 100.0, "val_mIoU": 0.5123, "iters": 300}}}
    text = proof["summary"](report)
    assert "| unet | bf16 + compile | zoo | 120.0 | 400.0 | 21.0% | 5.0% | 9000 |" in text
    assert "| camvid | ok | 100.0 | val mIoU 0.5123 after 300 iters. |" in text


def test_a_failing_part_is_recorded_and_the_next_runs(proof):
    def broken():
        raise RuntimeError("CUDA error: out of memory\nmore")
    result = proof["part"](broken)
    assert result["status"] == "failed" and result["reason"] == "RuntimeError: CUDA error: out of memory"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_channels_last_training_step_on_cuda():
    model = zoo.create("unet", encoder="test_resnet", num_classes=3).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (2, 64, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_model_matches_eager_on_cuda():
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=3, head_channels=16,
                       aux_channels=8).cuda().eval()
    x = torch.randn(1, 3, 64, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), atol=1e-3, rtol=1e-3)
