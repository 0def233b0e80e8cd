"""Upsamplers: textbook values, exact sizes, the shared contract and the factory."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decoders.blocks import stage_sizes, step_reductions
from decoders.upsample import (
    UPSAMPLERS,
    MissingSwitchesError,
    PixelShuffleUpsample,
    TransposedUpsample,
    Upsampler,
    bilinear_kernel,
    guide_switches,
    make_upsampler,
    register_upsampler,
    resolve_upsampler,
    spec_to_config,
    unpool,
    upsampler_class,
)


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


# ----------------------------------------------------------------------------- unpooling

def test_unpool_places_values_at_switches_zeros_elsewhere():
    x = torch.randn(1, 2, 6, 8)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    y = unpool(pooled, idx, (6, 8))
    assert torch.equal(y, F.max_unpool2d(pooled, idx, 2, 2, output_size=(6, 8)))
    mask = y != 0
    assert mask.sum() == pooled.numel()
    assert torch.equal(y[mask], x[mask])  # each max returns to where it came from


def test_overlapping_switches_keep_the_largest_value():
    """ResNet's stem pool (3x3, stride 2, padding 1) sends several windows to one
    input position; the unpooled value there is the largest of theirs."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 8, 8)
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert idx.unique().numel() < idx.numel()  # collisions do occur
    values = torch.randn(1, 1, 4, 4)
    y = unpool(values, idx, (8, 8))
    expected = torch.zeros(64)
    hit = torch.zeros(64, dtype=torch.bool)
    for v, i in zip(values.flatten().tolist(), idx.flatten().tolist()):
        expected[i] = v if not hit[i] else max(expected[i].item(), v)
        hit[i] = True
    torch.testing.assert_close(y.flatten(), expected)
    assert torch.equal(y, unpool(values, idx, (8, 8)))


def pyramid_switches(x, steps):
    """Switches of `steps` successive 2x2 max-pools of x, coarse to fine, and the pooled map."""
    chain = []
    for _ in range(steps):
        x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        chain.append(idx)
    return x, chain[::-1]


def test_multi_step_unpool_returns_each_maximum_to_its_origin():
    """x8 unpooling with identity convolutions sends the maximum of every 8x8
    block back to exactly where it was in the full-resolution map."""
    torch.manual_seed(0)
    full = torch.randn(1, 2, 32, 32)
    pooled, chain = pyramid_switches(full, 3)
    up = make_upsampler("unpool", 2, 2, 8, head_convolves=True)
    for conv in up.convs:
        if isinstance(conv, nn.Conv2d):
            nn.init.dirac_(conv.weight)
            nn.init.zeros_(conv.bias)
    y = up(pooled, indices=chain, output_size=(32, 32))
    block_max = F.max_pool2d(full, 8, 8).repeat_interleave(8, -1).repeat_interleave(8, -2)
    assert torch.equal(y != 0, full == block_max)
    assert torch.equal(y[y != 0], full[y != 0])


def test_unpool_head_convolves_leaves_the_sparse_map_to_the_head():
    x = torch.randn(1, 4, 6, 8)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    sparse = make_upsampler("unpool", 4, 4, 2, head_convolves=True)
    assert isinstance(sparse.convs[-1], nn.Identity)
    assert torch.equal(sparse(pooled, indices=idx, output_size=(6, 8)), unpool(pooled, idx, (6, 8)))
    dense = make_upsampler("unpool", 4, 3, 2)
    assert isinstance(dense.convs[-1], nn.Conv2d) and dense.convs[-1].kernel_size == (3, 3)
    assert (dense(pooled, indices=idx, output_size=(6, 8)) != 0).float().mean() > 0.9


def test_unpool_refuses_to_run_or_be_built_without_switches():
    with pytest.raises(ValueError, match="unpool needs the encoder's max-pool switches"):
        make_upsampler("unpool", 2, 2, 2)(torch.randn(1, 2, 3, 3), guide=torch.randn(1, 2, 6, 6))
    with pytest.raises(MissingSwitchesError) as e:
        make_upsampler("unpool", 2, 2, 8, switch_channels=[4, None, None])
    assert e.value.steps == [1, 2]


def test_guide_switches_follow_the_guide_maximum():
    guide = torch.zeros(1, 3, 4, 4)
    guide[0, :, 1, 0] = 5.0   # top-left window: max at (1, 0)
    guide[0, :, 3, 3] = -7.0  # bottom-right window: |.| max at (3, 3)
    (idx,) = guide_switches(guide, [(4, 4)])
    assert idx[0, 0, 0, 0] == 1 * 4 + 0
    assert idx[0, 0, 1, 1] == 3 * 4 + 3
    up = make_upsampler("guided_unpool", 5, 5, 2, head_convolves=True)
    out = up(torch.ones(1, 5, 2, 2), guide=guide)
    assert out[0, :, 1, 0].eq(1).all() and out[0, :, 0, 0].eq(0).all() and out[0, :, 3, 3].eq(1).all()


def test_guided_unpool_is_dense_after_several_steps():
    """A conv after every x2 step: x8 unpooling of a constant map leaves no hole."""
    up = make_upsampler("guided_unpool", 4, 4, 8)
    for conv in up.convs:
        nn.init.constant_(conv.weight, 1.0)
        nn.init.zeros_(conv.bias)
    y = up(torch.ones(1, 4, 3, 3), guide=torch.randn(1, 2, 24, 24))
    assert y.shape == (1, 4, 24, 24) and (y[..., 2:-2, 2:-2] > 0).all()
    with pytest.raises(ValueError, match="guided_unpool needs a guide"):
        up(torch.ones(1, 4, 3, 3))


def test_declarations_are_class_properties():
    assert upsampler_class("unpool").needs_switches and not upsampler_class("unpool").needs_guide
    assert upsampler_class("guided_unpool").needs_guide
    assert not any(upsampler_class(n).needs_switches for n in UPSAMPLERS if n != "unpool")


# ----------------------------------------------------------------------------- content-aware

def test_dysample_at_init_is_bilinear():
    up = make_upsampler("dysample", 8, 8, 2)
    nn.init.zeros_(up.offset.weight)
    x = torch.randn(1, 8, 5, 6)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)


def test_dysample_under_bf16_autocast_stays_bilinear_at_200px():
    """Sampling coordinates in bf16 round beyond ~128 px (off from bilinear by
    ~3 on unit-variance input); built in float32 only the bf16 output rounding remains."""
    torch.manual_seed(0)
    up = make_upsampler("dysample", 4, 4, 2)
    nn.init.zeros_(up.offset.weight)
    x = torch.randn(1, 4, 200, 200).bfloat16()  # what the convolution before it hands on
    ref = F.interpolate(x.float(), scale_factor=2, mode="bilinear", align_corners=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = up(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05


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


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_a_resize_to_a_size_off_the_grid_crops_rather_than_stretches(mode):
    """23 rows x8 with a target of 180 (not 184): output row i must still read
    input row (i + 0.5) / 8 - 0.5 (bilinear, align_corners=False) or i // 8
    (nearest), the encoder's grid, as transposed, PixelShuffle and the others do."""
    rows = torch.arange(23, dtype=torch.float64).view(1, 1, 23, 1).expand(1, 1, 23, 5)
    y = make_upsampler(mode, 1, 1, 8).double()(rows, output_size=(180, 40))
    assert y.shape == (1, 1, 180, 40)
    i = torch.arange(180, dtype=torch.float64)
    want = ((i + 0.5) / 8 - 0.5).clamp(0, 22) if mode == "bilinear" else torch.div(i, 8, rounding_mode="floor")
    torch.testing.assert_close(y[0, 0, :, 0], want)


def test_a_resize_before_the_heads_convolutions_keeps_every_channel():
    x = torch.randn(1, 6, 4, 5)
    projected = make_upsampler("bilinear", 6, 2, 2)
    assert projected.out_channels == 2 and projected(x).shape == (1, 2, 8, 10)
    kept = make_upsampler("bilinear", 6, 2, 2, head_convolves=True)
    assert kept.out_channels == 6 and not any(p.numel() for p in kept.parameters())
    torch.testing.assert_close(kept(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


# ----------------------------------------------------------------------------- the contract

def step_inputs(name, x, scale, target):
    """What a head would pass: a guide at the target, switches per x2 step."""
    n, c = x.shape[:2]
    full = torch.randn(n, c, *target)
    if upsampler_class(name).needs_switches:
        sizes = stage_sizes(target, len(step_reductions(scale, 1)))
        chain, plane = [], full
        for size in reversed(sizes):
            plane = plane[..., :size[0], :size[1]]
            plane, idx = F.max_pool2d(plane, 2, 2, ceil_mode=True, return_indices=True)
            chain.append(idx)
        return {"guide": full, "indices": chain[::-1]}
    return {"guide": torch.randn(n, 4, *target)}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.train) if n == "freqfusion" else n
                                  for n in UPSAMPLERS])  # freqfusion: seconds a pass
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_contract_shapes_and_gradients(name, scale):
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    target = (7 * scale - (scale - 1), 9 * scale)  # an odd size ceil-division produced
    up = make_upsampler(name, 8, 6, scale, guide_channels=4)   # as wide as step_inputs' guide
    y = up(x, output_size=target, **step_inputs(name, x, scale, target))
    assert y.shape == (2, 6, *target)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in up.parameters())


def test_unknown_upsampler_names_close_choices():
    with pytest.raises(ValueError, match="did you mean pixelshuffle"):
        make_upsampler("pixelshufle", 2, 2, 2)
    with pytest.raises(ValueError, match="power of two"):
        make_upsampler("bilinear", 2, 2, 3)


def test_options_reach_the_class_and_unknown_ones_are_refused():
    plain = make_upsampler({"name": "pixelshuffle", "icnr": False}, 4, 2, 2)
    assert not torch.equal(plain.conv.weight[0], plain.conv.weight[1])  # not ICNR-repeated
    assert make_upsampler({"name": "carafe", "up_kernel": 3}, 4, 4, 2).k == 3
    with pytest.raises(ValueError, match=r"'pixelshuffle': unknown option\(s\) icnr_init; valid: icnr"):
        make_upsampler({"name": "pixelshuffle", "icnr_init": False}, 4, 2, 2)
    with pytest.raises(ValueError, match="needs a 'name'"):
        make_upsampler({"icnr": False}, 4, 2, 2)


class Doubling(Upsampler):
    """An upsampler from outside the package: nearest x scale, then a 1x1 conv."""

    def __init__(self, in_channels, out_channels, scale, gain: float = 1.0):
        super().__init__(in_channels, out_channels, scale)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.gain = gain

    def forward(self, x, guide=None, indices=None, output_size=None):
        y = F.interpolate(self.proj(x), scale_factor=self.scale, mode="nearest")
        return self.gain * y[..., :self.target(x, output_size)[0], :self.target(x, output_size)[1]]


@pytest.mark.parametrize("spec", [Doubling, partial(Doubling, gain=2.0),
                                  f"{__name__}:Doubling", {"name": f"{__name__}:Doubling", "gain": 2.0}])
def test_a_class_partial_or_import_path_is_an_upsampler(spec):
    up = make_upsampler(spec, 3, 5, 4)
    assert isinstance(up, Doubling) and up(torch.randn(1, 3, 2, 2)).shape == (1, 5, 8, 8)
    again = make_upsampler(spec_to_config(spec), 3, 5, 4)  # a config stores it as JSON
    assert type(again) is Doubling and again.gain == up.gain


def test_registration_is_unique_and_typed():
    @register_upsampler("test_doubling_once")
    class Once(Doubling):
        pass
    try:
        assert resolve_upsampler("test_doubling_once")[0] is Once
        with pytest.raises(ValueError, match="already registered"):
            register_upsampler("test_doubling_once", Doubling)
        with pytest.raises(TypeError, match="expected an Upsampler subclass"):
            register_upsampler("test_not_an_upsampler", nn.Conv2d)
    finally:
        UPSAMPLERS.pop("test_doubling_once")


def test_stage_sizes_ceil_chain():
    assert stage_sizes((97, 131), 3) == [(25, 33), (49, 66), (97, 131)]
    assert step_reductions(32, 4) == [16, 8, 4] and step_reductions(8, 8) == []
