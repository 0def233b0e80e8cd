"""Upsamplers: textbook values, exact sizes, and the shared contract."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decoders.blocks import stage_sizes
from decoders.upsample import (UPSAMPLERS, PixelShuffleUpsample, TransposedUpsample,
                               bilinear_kernel, guide_switches, make_upsampler, unpool)


def transposed_size(n, k, s, p, op=0, d=1):
    """The ConvTranspose2d output-size formula from the PyTorch docs."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


@pytest.mark.parametrize("scale", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("n", [1, 7, 13])
def test_transposed_size_arithmetic(scale, n):
    up = TransposedUpsample(3, 3, scale)
    conv = up.conv
    assert transposed_size(n, conv.kernel_size[0], scale, conv.padding[0]) == n * scale
    x = torch.randn(1, 3, n, n + 1)
    assert up(x).shape[-2:] == (n * scale, (n + 1) * scale)
    # every size within reach of output_padding, and the crop below it
    for target in (n * scale - 1, n * scale, n * scale + scale - 1):
        if target > 0:
            assert up(x, output_size=(target, target)).shape[-2:] == (target, target)


def test_transposed_uses_output_padding_not_crop():
    up = TransposedUpsample(2, 2, 2)
    x = torch.randn(1, 2, 5, 5)
    y = up(x, output_size=(11, 11))
    assert y.shape[-2:] == (11, 11)
    torch.testing.assert_close(y[..., :10, :10], up(x)[..., :10, :10])


def test_bilinear_kernel_values():
    torch.testing.assert_close(bilinear_kernel(2)[0], torch.tensor([.25, .75, .75, .25]) * .25)
    k4 = bilinear_kernel(4)
    assert k4.shape == (8, 8)
    torch.testing.assert_close(k4.sum(), torch.tensor(16.0))  # s^2: each output weight sums to 1


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bilinear_init_transposed_equals_interpolate_away_from_border(scale):
    up = TransposedUpsample(3, 3, scale)
    x = torch.randn(2, 3, 9, 11)
    y = up(x)
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    b = scale  # the zero padding of the transposed conv only touches one source pixel of border
    torch.testing.assert_close(y[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y[..., 0, 0], ref[..., 0, 0])  # the border really differs


@pytest.mark.parametrize("scale", [2, 4])
def test_icnr_pixelshuffle_equals_nearest_of_shared_subkernel(scale):
    up = PixelShuffleUpsample(4, 3, scale)
    x = torch.randn(2, 4, 6, 7)
    w = up.conv.weight[::scale ** 2]  # one sub-kernel per output channel
    b = up.conv.bias[::scale ** 2]
    ref = F.interpolate(F.conv2d(x, w, b, padding=1), scale_factor=scale, mode="nearest")
    torch.testing.assert_close(up(x), ref)
    assert not torch.equal(up.conv.weight[0], up.conv.weight[scale ** 2])  # channels differ


def test_unpool_places_values_at_switches_zeros_elsewhere():
    x = torch.randn(1, 2, 6, 8)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    y = unpool(pooled, idx, (6, 8))
    assert torch.equal(y, F.max_unpool2d(pooled, idx, 2, 2, output_size=(6, 8)))
    mask = y != 0
    assert mask.sum() == pooled.numel()
    assert torch.equal(y[mask], x[mask])  # each max returns to where it came from


def test_unpool_upsampler_uses_true_switches():
    up = make_upsampler("unpool", 2, 2, 2)
    nn.init.dirac_(up.convs[0].weight)
    nn.init.zeros_(up.convs[0].bias)
    x = torch.randn(1, 2, 6, 8)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    y = up(pooled, indices=idx, output_size=(6, 8))
    assert torch.equal(y != 0, F.max_unpool2d(pooled, idx, 2, 2, output_size=(6, 8)) != 0)


def test_guide_switches_follow_the_guide_maximum():
    guide = torch.zeros(1, 3, 4, 4)
    guide[0, :, 1, 0] = 5.0   # top-left window: max at (1, 0)
    guide[0, :, 3, 3] = -7.0  # bottom-right window: |.| max at (3, 3)
    (idx,) = guide_switches(guide, [(4, 4)])
    assert idx[0, 0, 0, 0] == 1 * 4 + 0
    assert idx[0, 0, 1, 1] == 3 * 4 + 3
    up = make_upsampler("unpool", 5, 5, 2)
    y = up.project(torch.ones(1, 5, 2, 2))
    out = unpool(y, idx, (4, 4))
    assert out[0, :, 1, 0].eq(1).all() and out[0, :, 0, 0].eq(0).all()


def test_multi_step_unpool_is_dense():
    """A conv after every x2 step: x8 unpooling of a constant map leaves no hole."""
    up = make_upsampler("unpool", 4, 4, 8)
    for conv in up.convs:
        nn.init.constant_(conv.weight, 1.0)
        nn.init.zeros_(conv.bias)
    y = up(torch.ones(1, 4, 3, 3), guide=torch.randn(1, 2, 24, 24))
    assert y.shape == (1, 4, 24, 24) and (y[..., 2:-2, 2:-2] > 0).all()


def test_unpool_needs_switches():
    with pytest.raises(ValueError, match="unpool needs switches"):
        make_upsampler("unpool", 2, 2, 2)(torch.randn(1, 2, 3, 3))


def test_dysample_at_init_is_bilinear():
    up = make_upsampler("dysample", 8, 8, 2)
    nn.init.zeros_(up.offset.weight)
    x = torch.randn(1, 8, 5, 6)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)


def test_carafe_with_uniform_kernels_is_local_mean():
    up = make_upsampler("carafe", 4, 4, 2, up_kernel=3)
    nn.init.zeros_(up.encode.weight)
    x = torch.ones(1, 4, 5, 5)
    y = up(x)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.ones(()))  # interior: mean of ones
    assert y[0, 0, 0, 0] < 1  # zero padding at the corner


def test_resize_upsamplers_start_as_pure_resize():
    x = torch.randn(1, 3, 4, 5)
    for mode in ("bilinear", "nearest"):
        ref = F.interpolate(x, scale_factor=4, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        torch.testing.assert_close(make_upsampler(mode, 3, 3, 4)(x), ref)


@pytest.mark.parametrize("name", list(UPSAMPLERS))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_contract_shapes_and_gradients(name, scale):
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    target = (7 * scale - (scale - 1), 9 * scale)  # an odd size ceil-division produced
    guide = torch.randn(2, 4, *target)
    up = make_upsampler(name, 8, 6, scale)
    y = up(x, guide=guide, output_size=target)
    assert y.shape == (2, 6, *target)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in up.parameters())


def test_unknown_upsampler_names_close_choices():
    with pytest.raises(ValueError, match="did you mean pixelshuffle"):
        make_upsampler("pixelshufle", 2, 2, 2)
    with pytest.raises(ValueError, match="power of two"):
        make_upsampler("bilinear", 2, 2, 3)


def test_stage_sizes_ceil_chain():
    assert stage_sizes((97, 131), 3) == [(25, 33), (49, 66), (97, 131)]
