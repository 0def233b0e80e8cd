"""Checkerboard score: textbook patterns, interpolators vs transposed convolution."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decoders.artifacts import checkerboard_per_sample, checkerboard_score, smooth_field, upsampler_checkerboard
from decoders.upsample import UPSAMPLERS, make_upsampler

C = 8


@pytest.fixture
def field():
    return smooth_field((2, C, 32, 32), sigma=2.0, generator=torch.Generator().manual_seed(0))


def interpolate(x, mode, scale=2):
    return F.interpolate(x, scale_factor=scale, mode=mode)


@torch.no_grad()
def transposed(x, kernel, stride=2, seed=1):
    torch.manual_seed(seed)  # PyTorch's default (kaiming-uniform) init
    padding = (kernel - stride + 1) // 2
    conv = nn.ConvTranspose2d(C, C, kernel, stride, padding=padding,
                              output_padding=stride + 2 * padding - kernel)  # exactly s x the size
    return conv(x)


def test_pure_checkerboard_scores_one_and_constant_zero():
    i = torch.arange(64)
    board = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(1, 3, 64, 64)
    assert checkerboard_score(board) > 0.99
    assert checkerboard_score(torch.full((1, 3, 64, 64), 5.0)) == 0.0


@pytest.mark.parametrize("stride, share", [(2, 3 / 16), (4, 15 / 64)])
def test_white_noise_scores_about_the_band_share(stride, share):
    score = checkerboard_score(torch.randn(4, 4, 64, 64), stride)
    assert share <= score < share + 0.11  # the inclusive band edges add a few bins


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolation_of_smooth_field_scores_near_zero(field, mode):
    assert checkerboard_score(interpolate(field, mode)) < 0.05


@pytest.mark.parametrize("kernel", [2, 3])
def test_random_transposed_conv_scores_high(field, kernel):
    score = checkerboard_score(transposed(field, kernel))
    baseline = max(checkerboard_score(interpolate(field, m)) for m in ("nearest", "bilinear"))
    assert score > 0.3
    assert score > 5 * baseline


def test_pixelshuffle_icnr_is_clean_and_kaiming_is_not(field):
    torch.manual_seed(0)
    up = make_upsampler("pixelshuffle", C, C, 2)
    with torch.no_grad():
        icnr = checkerboard_score(up(field))
        nn.init.kaiming_normal_(up.conv.weight)
        kaiming = checkerboard_score(up(field))
    assert icnr < 0.05
    assert kaiming > 0.3 and kaiming > 5 * icnr


def test_scale_invariant_and_per_sample(field):
    y = transposed(field, 3)
    assert checkerboard_score(10 * y) == pytest.approx(checkerboard_score(y), rel=1e-9)
    mixed = torch.cat([interpolate(field[:1], "bilinear"), y[1:]])
    per = checkerboard_per_sample(mixed)
    assert per.shape == (2,) and per[0] < 0.05 < 0.3 < per[1]


def test_stride_four(field):
    smooth = checkerboard_score(interpolate(field, "bilinear", 4), 4)
    torch.manual_seed(1)
    with torch.no_grad():
        rough = checkerboard_score(nn.ConvTranspose2d(C, C, 4, 4)(field), 4)
    assert smooth < 0.05 and rough > 0.3


def test_odd_sizes_are_cropped_and_tiny_maps_refused():
    assert 0 <= checkerboard_score(torch.randn(1, 2, 33, 35)) <= 1
    with pytest.raises(ValueError, match="too small"):
        checkerboard_score(torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match="N, C, H, W"):
        checkerboard_score(torch.randn(6, 32, 32))


@pytest.mark.parametrize("name", list(UPSAMPLERS))
def test_upsampler_checkerboard_every_upsampler(name):
    rng_before = torch.random.get_rng_state()
    score = upsampler_checkerboard(name, channels=C, size=16, seeds=(0,))
    assert 0 <= score <= 1
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    if name in ("transposed", "bilinear", "nearest", "pixelshuffle", "dysample"):
        assert score < 0.05  # each starts as an interpolator


def test_upsampler_checkerboard_transposed_default_init_is_rough():
    assert upsampler_checkerboard("transposed", channels=C, size=16, seeds=(0, 1),
                                  init="default") > 0.3
