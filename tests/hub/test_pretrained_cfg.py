"""An entry's model carries the input it was scored at, and says so when fed another."""
import warnings

import numpy as np
import pytest
import torch

import zoo
from zoo.hub.entries import ENTRIES


def test_every_shipped_entry_states_its_input_size_from_its_protocol():
    for name, entry in ENTRIES.items():
        frame, scale = entry.eval_protocol["frame_size"], entry.eval_protocol["scales"][0]
        assert frame == [360, 480], name  # CamVid's val frames, fed without a val transform
        assert entry.input_size == (round(frame[0] * scale), round(frame[1] * scale)), name
    # the two protocols the shipped entries use: halved frames, and full frames
    assert ENTRIES["pspnet_resnet10t_camvid"].input_size == (180, 240)
    assert ENTRIES["unet_resnet10t_camvid"].input_size == (360, 480)


def test_several_scales_or_a_sliding_window_have_no_single_input_size():
    entry = ENTRIES["pspnet_resnet10t_camvid"]
    multi = type(entry)(**{**entry.to_dict(), "eval_protocol": {"mode": "whole", "scales": [0.5, 1.0],
                                                                  "frame_size": [360, 480]}})
    slide = type(entry)(**{**entry.to_dict(), "eval_protocol": {"mode": "slide", "scales": [1.0],
                                                                  "frame_size": [360, 480]}})
    unknown = type(entry)(**{**entry.to_dict(), "eval_protocol": {"mode": "whole", "scales": [0.5]}})
    assert multi.input_size is None and slide.input_size is None and unknown.input_size is None
    assert multi.pretrained_cfg()["input_size"] is None


@pytest.fixture(scope="module")
def pspnet():
    return zoo.create("pspnet_resnet10t_camvid", pretrained=True).eval()


def test_create_pretrained_carries_the_cfg(pspnet):
    cfg = pspnet.pretrained_cfg
    assert cfg["input_size"] == (3, 180, 240) and cfg["frame_size"] == (360, 480)
    assert cfg["eval_scales"] == (0.5,) and cfg["num_classes"] == 11 and cfg["classes"][0] == "sky"
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))


def _warnings(call):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with torch.no_grad():
            call()
    return [str(w.message) for w in seen]


def test_a_full_frame_is_told_once_what_to_feed(pspnet):
    model = zoo.create("pspnet_resnet10t_camvid", pretrained=True).eval()
    assert _warnings(lambda: model(torch.randn(1, 3, 180, 240))) == []
    told = _warnings(lambda: [model(torch.randn(1, 3, 360, 480)) for _ in range(2)])
    assert len(told) == 1
    assert "pspnet_resnet10t_camvid was scored on 180x240 inputs (frames of 360x480 resized by 0.5)" in told[0]
    assert "360x480 input" in told[0] and "zoo.predict(model, image)" in told[0]


def test_training_and_predict_are_not_warned():
    model = zoo.create("pspnet_resnet10t_camvid", pretrained=True)
    model.train()
    assert _warnings(lambda: model(torch.randn(2, 3, 176, 240))) == []
    model.eval()
    seen = _warnings(lambda: zoo.predict(model, np.zeros((360, 480, 3), np.uint8)))
    assert seen == []
    # A frame of twice the size is fitted to the card's 360x480 first, so the model sees its
    # 180x240 (flipped too); another aspect ratio keeps its own; neither is warned about.
    fed = []
    model.register_forward_pre_hook(lambda module, args: fed.append(tuple(args[0].shape[-2:])))
    big = []
    assert _warnings(lambda: big.append(zoo.predict(model, np.zeros((720, 960, 3), np.uint8)))) == []
    assert set(fed) == {(180, 240)} and big[0].mask.shape == (720, 960)
    fed.clear()
    assert _warnings(lambda: zoo.predict(model, np.zeros((97, 131, 3), np.uint8))) == []
    assert set(fed) == {(178, 240)}  # 97x131 fitted to 355x480, then the eval scale 0.5


def test_to_frame_fits_the_frame_long_side_to_long_side():
    from zoo.inference.predict import to_frame
    assert to_frame(torch.zeros(1, 3, 720, 960), [360, 480]).shape[-2:] == (360, 480)
    assert to_frame(torch.zeros(1, 3, 960, 720), [360, 480]).shape[-2:] == (480, 360)  # portrait stays so
    x = torch.zeros(1, 3, 360, 480)
    assert to_frame(x, [360, 480]) is x and to_frame(x, None) is x


def test_fresh_or_refitted_models_carry_no_size_check():
    fresh = zoo.create("pspnet_resnet10t_camvid").eval()
    assert not hasattr(fresh, "pretrained_cfg")
    with pytest.warns(UserWarning, match="shapes differ"):
        refit = zoo.create("pspnet_resnet10t_camvid", pretrained=True, num_classes=5).eval()
    assert _warnings(lambda: refit(torch.randn(1, 3, 96, 128))) == []
    assert "classes" not in refit.pretrained_cfg and refit.pretrained_cfg["input_size"] == (3, 180, 240)
