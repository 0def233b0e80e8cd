"""Learning parity with smp (zoo/lab/parity.py): one sample stream, both models, a report."""
import json
import runpy
from pathlib import Path

import pytest
import torch

from zoo.data.base import IGNORE_INDEX
from zoo.lab import parity

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def test_the_sample_stream_is_a_function_of_the_seed():
    _, a = parity.sample_stream(None, None, None, batch=3, seed=4)
    _, b = parity.sample_stream(None, None, None, batch=3, seed=4)
    _, c = parity.sample_stream(None, None, None, batch=3, seed=5)
    first_a, first_b, first_c = next(a), next(b), next(c)
    assert torch.equal(first_a["image"], first_b["image"]) and torch.equal(first_a["mask"], first_b["mask"])
    assert not torch.equal(first_a["image"], first_c["image"])


def test_smp_pairs_match_the_zoo_decoder_and_say_how_pspnet_differs():
    ours, theirs, note = parity.build_pair("unet", "resnet18", 5)
    ours_widths = [s.convs[-1][0].out_channels for s in ours.head.stages]
    theirs_widths = [b.conv2[0].out_channels for b in theirs.decoder.blocks]
    assert ours_widths == theirs_widths == [256, 128, 64, 32, 16]
    _, _, note = parity.build_pair("pspnet", "resnet18", 5)
    assert "not dilated" in note
    with pytest.raises(ValueError, match="compares unet, pspnet, not 'fcn8s'"):
        parity.build_pair("fcn8s", "resnet18", 5)


def test_unet_with_a_resize_matches_smp_unet_parameter_for_parameter():
    ours, theirs, _ = parity.build_pair("unet", "resnet18", 11)
    assert ours.head.stages[0].up.out_channels == 512  # the deep feature is not projected
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_unet_classifier_starts_from_xavier_weights_and_zero_bias():
    import zoo
    torch.manual_seed(0)
    model = zoo.create("unet", encoder="test_resnet", num_classes=11)
    w, b = model.head.classifier.weight, model.head.classifier.bias
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = (6 / (fan_in + fan_out)) ** 0.5  # Xavier uniform; PyTorch's default is 1/sqrt(fan_in)
    assert torch.count_nonzero(b) == 0
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.9 * bound and w.abs().max() > 1.2 / fan_in ** 0.5


@pytest.mark.parametrize("encoder", ["resnet18", "test_resnet"])
def test_residual_encoders_from_scratch_do_not_zero_init_their_last_norm(encoder):
    from zoo.models.encoders import Encoder
    blocks = [m for m in Encoder(encoder).modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    last_norms = [b.bn3 if hasattr(b, "bn3") else b.bn2 for b in blocks]
    assert last_norms and all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in last_norms)


def test_val_pads_frames_that_smp_pspnet_refuses_and_scores_the_original_pixels():
    """smp's PSPNet refuses a 180x240 frame (180 is not a multiple of 8); both models of a
    pair get the same zero-padded frame and are scored on the original pixels only."""
    ours, theirs, _ = parity.build_pair("pspnet", "resnet18", 3)
    assert parity.input_multiple(ours, theirs) == 8 and parity.input_multiple(ours) == 1
    assert parity.input_multiple(*parity.build_pair("unet", "resnet18", 3)[:2]) == 1
    seen = []

    class Left(torch.nn.Module):  # class 0 on the frame's left half, 1 on its right; records its input
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            out = torch.zeros(1, 3, *x.shape[-2:])
            out[:, 0, :, : x.shape[-1] // 2] = 1
            out[:, 1, :, x.shape[-1] // 2:] = 1
            return out

    class Frame:
        ignore_index = IGNORE_INDEX

        def __len__(self):
            return 1

        def __getitem__(self, i):
            mask = torch.zeros(10, 12, dtype=torch.long)
            mask[:, 6:] = 1
            return {"image": torch.zeros(3, 10, 12), "mask": mask}

    assert parity.val_miou(Left(), Frame(), 3, "cpu", multiple=1) == 1.0
    # padded to 16x16 the model splits at column 8, not 6: 2 of 12 columns per row go wrong
    assert parity.val_miou(Left(), Frame(), 3, "cpu", multiple=8) == pytest.approx((60 / 80 + 40 / 60) / 2)
    assert seen == [(10, 12), (16, 16)]
    with pytest.raises(RuntimeError, match="divisible by 8"):
        theirs.eval()(torch.zeros(1, 3, 180, 240))


def test_summary_takes_the_last_forty_percent_of_the_curve():
    runs = [{"zoo": {"loss": [9.0] * 6 + [1.0] * 4, "val_mIoU": 0.5, "params": 2e6, "step_s": 1.0},
             "smp": {"loss": [9.0] * 6 + [3.0] * 4, "val_mIoU": 0.3, "params": 1e6, "step_s": 2.0}},
            {"zoo": {"loss": [9.0] * 6 + [2.0] * 4, "val_mIoU": 0.7, "params": 2e6, "step_s": 1.0},
             "smp": {"loss": [9.0] * 6 + [3.0] * 4, "val_mIoU": 0.3, "params": 1e6, "step_s": 2.0}}]
    s = parity.summarize(runs, iters=10)
    assert s["zoo"]["late_loss"] == (1.5, pytest.approx(0.7071067811865476))
    assert s["zoo"]["val_mIoU"][0] == pytest.approx(0.6)
    assert s["smp"]["late_loss"] == (3.0, 0.0) and s["smp"]["params_m"] == 1.0


def test_paired_differences_count_the_seeds_each_side_wins():
    def run(zoo_miou, smp_miou, zoo_loss, smp_loss):
        return {"zoo": {"loss": [zoo_loss] * 5, "val_mIoU": zoo_miou, "params": 1e6, "step_s": 1.0},
                "smp": {"loss": [smp_loss] * 5, "val_mIoU": smp_miou, "params": 1e6, "step_s": 1.0}}
    # seed by seed: mIoU +0.02, -0.04, +0.05 (zoo ahead on 2); loss -0.1, -0.3, +0.1 (ahead on 2)
    runs = [run(0.50, 0.48, 1.0, 1.1), run(0.40, 0.44, 0.9, 1.2), run(0.45, 0.40, 1.1, 1.0)]
    p = parity.summarize(runs, iters=5)["paired"]
    assert p["val_mIoU"]["diff"] == (pytest.approx(0.01), pytest.approx(0.04582575694955839))
    assert (p["val_mIoU"]["zoo_ahead"], p["val_mIoU"]["seeds"]) == (2, 3)
    assert p["late_loss"]["diff"][0] == pytest.approx(-0.1) and p["late_loss"]["zoo_ahead"] == 2
    text = parity.format_summary({"arch": "unet", "encoder": "resnet18", "iters": 5, "batch": 2,
                                  "crop": [8, 8], "data": "synthetic", "device": "cpu",
                                  "runs": [{**r, "note": ""} for r in runs],
                                  "summary": parity.summarize(runs, iters=5)})
    assert "zoo - smp, paired by seed, val mIoU: +0.0100 ± 0.0458 (zoo ahead on 2 of 3 seeds)" in text


@pytest.mark.slow
def test_learning_benchmark_cli_on_embedded_data(tmp_path, capsys):
    """A small run of `tools/benchmark.py --learning`: both curves, both mIoUs, a plot."""
    main = runpy.run_path(str(TOOLS / "benchmark.py"), run_name="benchmark_cli")["main"]
    main(["--learning", "--arch", "unet", "--encoder", "resnet18", "--seeds", "0", "1",
          "--learning-iters", "6", "--learning-batch", "2", "--out", str(tmp_path), "--threads", "1"])
    report = json.loads((tmp_path / "parity_unet_resnet18.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1]
    for run in report["runs"]:
        for name in ("zoo", "smp"):
            assert len(run[name]["loss"]) == 6 and all(v > 0 for v in run[name]["loss"])
            assert 0 <= run[name]["val_mIoU"] <= 1
    assert (tmp_path / "parity_unet_resnet18.png").stat().st_size > 1000
    assert "| zoo |" in capsys.readouterr().out


def test_reports_of_one_seed_each_combine_into_one():
    def report(seed, loss, **over):
        run = {"seed": seed, "note": "",
               "zoo": {"loss": [loss] * 10, "val_mIoU": 0.5, "params": 1e6, "step_s": 1.0},
               "smp": {"loss": [2.0] * 10, "val_mIoU": 0.4, "params": 1e6, "step_s": 1.0}}
        return {"arch": "unet", "encoder": "resnet18", "iters": 10, "batch": 2, "lr": 1e-3,
                "weight_decay": 0.01, "frame": [8, 8], "crop": [8, 8], "data": "synthetic",
                "zoo_args": {}, "runs": [run], **over}
    both = parity.combine([report(1, 3.0), report(0, 1.0)])
    assert [r["seed"] for r in both["runs"]] == [0, 1]
    assert both["summary"]["zoo"]["late_loss"] == (2.0, pytest.approx(2 ** 0.5))
    with pytest.raises(ValueError, match="differ in iters"):
        parity.combine([report(0, 1.0), report(1, 1.0, iters=20)])
    with pytest.raises(ValueError, match="differ in device"):  # step times of two machines
        parity.combine([report(0, 1.0, device="cpu"), report(1, 1.0, device="cuda:0")])
    with pytest.raises(ValueError, match=r"a seed twice: \[0, 0\]"):
        parity.combine([report(0, 1.0), report(0, 1.0)])


def _peer_report(iters, batch, seeds):
    runs = [{"seed": s, "note": "", "zoo": {"loss": [9.0] * iters, "val_mIoU": 0.1, "params": 1, "step_s": 1.0},
             "smp": {"loss": [float(s + 1)] * iters, "val_mIoU": 0.3 + s / 10, "params": 2e6, "step_s": 2.0}}
            for s in seeds]
    return {"arch": "unet", "encoder": "resnet18", "iters": iters, "batch": batch, "lr": 1e-3,
            "weight_decay": 0.01, "frame": [180, 240], "crop": [176, 224], "data": "synthetic",
            "zoo_args": {}, "runs": runs}


@pytest.mark.train
def test_a_stored_peer_side_is_reused_and_only_the_zoo_trains():
    peer = _peer_report(iters=2, batch=2, seeds=[0, 1])
    report = parity.run_parity("unet", seeds=(1,), iters=2, batch=2, peer=peer,
                               peer_source="old.json", log=lambda *_: None)
    run, = report["runs"]
    assert run["smp"] == {**peer["runs"][1]["smp"], "reused_from": "old.json"}
    assert len(run["zoo"]["loss"]) == 2 and run["zoo"]["loss"] != [9.0, 9.0]
    assert report["summary"]["smp"]["val_mIoU"] == (pytest.approx(0.4), 0.0)
    assert "smp side reused from old.json" in parity.format_summary(report)


def test_a_peer_report_with_other_settings_or_seeds_is_refused():
    with pytest.raises(ValueError, match=r"old.json: .*other settings: iters \(4 there, 2 here\)"):
        parity.run_parity("unet", seeds=(0,), iters=2, batch=2, peer=_peer_report(4, 2, [0]),
                          peer_source="old.json")
    with pytest.raises(ValueError, match=r"no smp run for seed\(s\) \[3\]; it has \[0\]"):
        parity.run_parity("unet", seeds=(3,), iters=2, batch=2, peer=_peer_report(2, 2, [0]))
