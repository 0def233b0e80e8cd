"""tools/list_models.py and the cost counters behind it."""
import pytest
import torch
from torch import nn

from zoo.models.profile import count_flops, count_params


def test_flops_of_one_convolution_is_the_textbook_count():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    # 2 FLOPs per multiply-add: 2 * (3*3*3) * 8 outputs channels * 16*16 positions
    assert count_flops(conv, (16, 16)) == 2 * 27 * 8 * 256
    assert count_params(conv) == 27 * 8


@pytest.mark.train  # a full-size U-Net, built twice and profiled
def test_list_models_prints_names_and_costs(capsys):
    import zoo
    from tools.list_models import main
    main(["fcn*"])
    entries = [name for name in zoo.list_models(pretrained=True) if name.startswith("fcn")]
    assert capsys.readouterr().out.split() == sorted(["fcn16s", "fcn32s", "fcn8s", "fcn8s_resnet50",
                                                      "fcn8s_vgg16", *entries])
    main(["unet", "--cost", "--size", "64", "64", "--num-classes", "5"])
    line = capsys.readouterr().out.strip().splitlines()[-1].split()
    model = zoo.create("unet", num_classes=5)
    assert line[0] == "unet"
    assert float(line[1]) == round(count_params(model) / 1e6, 2)
    assert float(line[2]) == round(count_flops(model, (64, 64)) / 1e9, 2)
    assert float(line[2]) > 0


def test_flops_scale_with_pixels():
    import zoo
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=3, head_channels=16)
    small, big = count_flops(model, (64, 64)), count_flops(model, (128, 128))
    assert 3.5 < big / small < 4.5  # convolutions dominate: ~4x the pixels, ~4x the FLOPs
    assert model.training  # the counter restores the mode it found
    assert torch.is_grad_enabled()


def test_list_pretrained_prints_each_entrys_model_dataset_miou_and_source(tmp_path, monkeypatch, capsys):
    import json

    from tools.list_models import main
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": [{
        "name": "toy_unet_entry", "model": {"name": "unet", "encoder": "test_resnet", "upsample": "bilinear",
                                            "num_classes": 2},
        "url": "https://models.example/toy_unet_entry", "sha256": "0" * 64, "classes": ["bg", "fg"],
        "metrics": {"mIoU": 0.61234}, "dataset": "toy"}]}))
    monkeypatch.setenv("ZOO_INDEX", str(index))
    main(["toy*", "--pretrained"])
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["entry", "model", "dataset", "classes", "val", "mIoU", "weights"]
    assert row.split() == ["toy_unet_entry", "unet/test_resnet/bilinear", "toy", "2", "0.612",
                           "https://models.example/toy_unet_entry"]
