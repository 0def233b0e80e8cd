"""Whole / slide / multi-scale + flip inference and evaluate() end to end."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.engine.evaluate import evaluate, predict_logits, slide_window

K = 4


class Counting(nn.Module):
    """Wraps a model and records the input size of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.model(x)


def test_slide_pads_an_image_smaller_than_the_crop():
    model = Counting(nn.Conv2d(3, K, 3, padding=1))   # zero padding == the zero-padded image
    x = torch.randn(2, 3, 10, 12)
    whole = predict_logits(model, x, num_classes=K)
    slide = predict_logits(model, x, mode="slide", crop_size=16, stride=8, num_classes=K)
    assert slide.shape == (2, K, 10, 12)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)
    assert model.sizes[1:] == [(16, 16)]


def test_slide_with_overlap_equals_whole_for_a_pointwise_model():
    model = Counting(nn.Conv2d(3, K, 1))
    x = torch.randn(1, 3, 20, 26)
    whole = predict_logits(model, x, num_classes=K)
    slide = predict_logits(model, x, mode="slide", crop_size=(8, 10), stride=(5, 6), num_classes=K)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)
    # rows: 1 + ceil((20-8)/5) = 4, cols: 1 + ceil((26-10)/6) = 4; every window full-size
    assert model.sizes[1:] == [(8, 10)] * 16


def test_slide_window_defaults_and_errors():
    assert slide_window(512) == ((512, 512), (341, 341))
    assert slide_window((769, 769)) == ((769, 769), (513, 513))
    with pytest.raises(ValueError, match="crop_size"):
        slide_window(None)
    with pytest.raises(ValueError, match="unknown mode"):
        predict_logits(nn.Identity(), torch.zeros(1, 3, 4, 4), mode="tile", num_classes=3)


def test_flip_averages_probabilities_of_the_unflipped_prediction():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 11)
    pointwise = nn.Conv2d(3, K, 1)                      # flip-equivariant
    torch.testing.assert_close(predict_logits(pointwise, x, flip=True, num_classes=K),
                               pointwise(x).softmax(1), rtol=0, atol=1e-6)
    conv = nn.Conv2d(3, K, 3, padding=1)                # not flip-equivariant
    expected = (conv(x).softmax(1) + conv(x.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(predict_logits(conv, x, flip=True, num_classes=K),
                               expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_multiscale_shape_and_probabilities(mode):
    model = nn.Conv2d(3, K, 3, padding=1)
    x = torch.randn(2, 3, 15, 17)
    out = predict_logits(model, x, mode=mode, crop_size=12, stride=8,
                         scales=(0.5, 1.0, 1.75), flip=True, num_classes=K)
    assert out.shape == (2, K, 15, 17)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 15, 17))
    # scale 1.0 alone equals the softmax of the single pass
    one = predict_logits(model, x, mode=mode, crop_size=12, stride=8, scales=(1.0, 1.0), num_classes=K)
    torch.testing.assert_close(one, predict_logits(model, x, mode=mode, crop_size=12, stride=8,
                                                   num_classes=K).softmax(1))


class Oracle(nn.Module):
    """Reads the class from channel 0 of the image: logits peak at that class."""

    def forward(self, x):
        return -(x[:, :1] - torch.arange(K, dtype=x.dtype).view(1, K, 1, 1)) ** 2


def _batch(labels, size=None):
    mask = labels.clone()
    image = labels.clamp(max=K - 1).float().unsqueeze(1).repeat(1, 3, 1, 1)
    if size is not None:
        image = F.interpolate(image, size=size, mode="nearest")
    mask[:, 0, 0] = 255
    return {"image": image, "mask": mask, "name": [f"im{i}" for i in range(len(labels))]}


def test_frame_size_is_recorded_only_when_every_frame_shares_it():
    same = [_batch(torch.randint(0, K, (1, 6, 10))) for _ in range(2)]
    mixed = same + [_batch(torch.randint(0, K, (1, 8, 8)))]
    assert evaluate(Oracle(), same, num_classes=K)["protocol"]["frame_size"] == [6, 10]
    assert evaluate(Oracle(), mixed, num_classes=K)["protocol"]["frame_size"] is None


def test_evaluate_perfect_model_scores_one():
    torch.manual_seed(0)
    loader = [_batch(torch.randint(0, K, (2, 8, 8))) for _ in range(3)]
    model = Oracle().train()
    out = evaluate(model, loader, num_classes=K, class_names=list("abcd"), max_batches=2)
    assert out["mIoU"] == 1.0 and out["pixel_acc"] == 1.0 and out["mean_acc"] == 1.0
    assert out["num_pixels"] == 2 * 2 * (64 - 1)          # max_batches, ignored pixel skipped
    assert set(out["per_class_iou"]) == set("abcd")
    assert out["protocol"] == {"mode": "whole", "crop_size": None, "stride": None,
                               "scales": [1.0], "flip": False, "frame_size": [8, 8]}
    assert torch.tensor(out["confusion"]).diag().sum() == out["num_pixels"]
    assert out["boundary_iou"] == 1.0 and out["trimap_miou"] == 1.0
    assert out["boundary_params"]["dilation_px_used"] == [1]  # 2% of an 8x8 diagonal, at least 1
    assert model.training                                    # mode restored


def test_evaluate_reports_boundary_iou_of_the_same_pass_by_hand():
    # 12x12, a 5x5 square of class 1 predicted one pixel to the right (test_boundary's
    # hand count): boundary IoU background 56/80, square 8/24; no void in this image.
    truth = torch.zeros(1, 12, 12, dtype=torch.long)
    truth[0, 3:8, 3:8] = 1
    shown = torch.zeros_like(truth)
    shown[0, 3:8, 4:9] = 1
    batch = {"image": shown.float().unsqueeze(1).repeat(1, 3, 1, 1), "mask": truth, "name": ["sq"]}
    out = evaluate(Oracle(), [batch], num_classes=K, boundary_dilation_ratio=0.05)   # d = 1
    assert out["per_class_boundary_iou"] == {"0": 56 / 80, "1": 8 / 24, "2": None, "3": None}
    assert out["boundary_iou"] == pytest.approx((56 / 80 + 8 / 24) / 2, abs=1e-15)
    assert out["per_class_iou"]["1"] == 20 / 30              # the area IoU of the same pass
    assert out["boundary_params"]["trimap_width"] == 3 and out["boundary_params"]["trimap_pixels"] > 0
    wide = evaluate(Oracle(), [batch], num_classes=K, boundary_dilation_ratio=0.5, trimap_width=1)
    assert wide["boundary_params"]["dilation_px_used"] == [8]   # round(0.5 * 16.97)
    assert wide["per_class_boundary_iou"]["1"] == pytest.approx(20 / 30)  # the band holds the squares


def test_evaluate_resizes_scores_to_label_size():
    # one class per image, labels at 12x16, images at 6x8
    labels = torch.stack([torch.full((12, 16), c) for c in range(K)])
    loader = [_batch(labels, size=(6, 8))]
    out = evaluate(Oracle(), loader, num_classes=K, mode="slide", crop_size=4, scales=(1.0, 1.5), flip=True)
    assert out["mIoU"] == 1.0
    assert out["num_pixels"] == K * (12 * 16 - 1)
    assert out["protocol"]["crop_size"] == [4, 4] and out["protocol"]["stride"] == [3, 3]


def test_evaluate_skips_the_ignore_index_it_is_given():
    torch.manual_seed(0)
    labels = torch.randint(0, K, (2, 8, 8))
    batch = _batch(labels)                                   # (0, 0) of each image is 255
    out = evaluate(Oracle(), [batch], num_classes=K, ignore_index=2)
    assert out["num_pixels"] == int((batch["mask"] != 2).sum() - 2)  # 255 is out of range: skipped too
    assert out["per_class_iou"]["2"] is None and out["mIoU"] == 1.0  # class 2 neither counted nor predicted


def test_a_stored_protocol_gets_the_defaults_of_weights_stored_without_one():
    from zoo.engine.evaluate import stored_protocol

    assert stored_protocol(None) == {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0],
                                     "flip": False}
    got = stored_protocol({"scales": (0.5, 0.75), "flip": True, "stride": None, "frame_size": (360, 480)})
    assert got == {"mode": "whole", "crop_size": None, "stride": None, "scales": [0.5, 0.75], "flip": True,
                   "frame_size": (360, 480)}
    assert stored_protocol({"mode": "slide", "crop_size": (4, 4), "scales": None})["scales"] == [1.0]
