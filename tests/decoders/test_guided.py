"""FADE and SAPA against their definitions, computed point by point in plain Python."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decoders.local_ops import from_phases, neighbour_softmax, reassemble
from decoders.upsample import make_upsampler, upsampler_class

H, W, S, K = 4, 5, 2, 3  # low-res size, scale, kernel: small enough to loop over


def neighbours(y, x):
    """In-image k x k neighbours of the low-res pixel (y, x), row-major, with their
    index in the k*k window."""
    r = K // 2
    return [(i * K + j, y + i - r, x + j - r) for i in range(K) for j in range(K)
            if 0 <= y + i - r < H and 0 <= x + j - r < W]


def randomised(up):
    """Weights far from their near-uniform initialisation, so kernels really vary."""
    torch.manual_seed(1)
    for p in up.parameters():
        nn.init.normal_(p, std=0.5)
    return up


def test_both_declare_the_guide():
    assert upsampler_class("fade").needs_guide and upsampler_class("sapa").needs_guide
    assert not upsampler_class("fade").needs_switches


def test_sapa_is_a_softmax_of_guide_key_similarity_over_in_image_neighbours():
    up = randomised(make_upsampler({"name": "sapa", "up_kernel": K, "embedding": 4}, 3, 3, S,
                                   guide_channels=2)).eval()
    x, g = torch.randn(1, 3, H, W), torch.randn(1, 2, S * H, S * W)
    with torch.no_grad():
        out = up(x, guide=g)
        q = up.query(up.norm_guide(g))[0]
        key = up.key(up.norm_x(x))[0]
    for Y in range(S * H):
        for X in range(S * W):
            nb = neighbours(Y // S, X // S)
            sims = torch.stack([q[:, Y, X] @ key[:, y, x] for _, y, x in nb])
            values = torch.stack([x[0, :, y, xx] for _, y, xx in nb])   # (n, C)
            want = sims.softmax(0) @ values
            torch.testing.assert_close(out[0, :, Y, X], want, atol=1e-5, rtol=1e-5)
            # a convex combination: inside the neighbours' range, channel by channel
            assert (out[0, :, Y, X] >= values.min(0).values - 1e-5).all()
            assert (out[0, :, Y, X] <= values.max(0).values + 1e-5).all()


@pytest.mark.parametrize("name", ["sapa", "fade"])
def test_constant_input_stays_constant_up_to_the_border(name):
    up = randomised(make_upsampler({"name": name, "up_kernel": 5}, 4, 4, 4, guide_channels=4))
    x = torch.full((2, 4, 5, 6), 0.7)
    g = torch.full((2, 4, 19, 24), 0.7) if name == "fade" else torch.randn(2, 4, 19, 24)
    with torch.no_grad():
        y = up(x, guide=g, output_size=(19, 24))
    assert y.shape == (2, 4, 19, 24)
    torch.testing.assert_close(y, torch.full_like(y, 0.7), atol=1e-6, rtol=0)


def test_fade_gates_the_guide_against_a_reassembly_with_normalised_kernels():
    up = randomised(make_upsampler({"name": "fade", "up_kernel": K, "embedding": 4}, 3, 2, S,
                                   guide_channels=2)).eval()
    x, g = torch.randn(1, 3, H, W), torch.randn(1, 2, S * H, S * W)
    with torch.no_grad():
        out = up(x, guide=g)
        gate = up.gate(x)[0, 0]
        kernels = up.kernels(x, g)
        hi = up.kernel_conv(up.compress_guide(g))[0]          # encoder part, per output point
        lo = up.kernel_conv(up.compress_x(x))[0]              # decoder part, per source pixel
        gate_logit = up.gate_conv(x)[0, 0]
        values, aligned = up.project(x)[0], up.align(g)[0]
    assert 0 <= gate.min() and gate.max() <= 1 and gate.std() > 0.05
    flat = from_phases(kernels, S)                            # (1, k*k, S*H, S*W)
    torch.testing.assert_close(flat.sum(1), torch.ones(1, S * H, S * W))
    for Y in range(S * H):
        for X in range(S * W):
            y0, x0 = Y // S, X // S
            nb = neighbours(y0, x0)
            w = torch.stack([hi[k, Y, X] + lo[k, y0, x0] for k, _, _ in nb]).softmax(0)
            outside = set(range(K * K)) - {k for k, _, _ in nb}
            assert all(flat[0, k, Y, X] == 0 for k in outside)
            mixed = w @ torch.stack([values[:, y, xx] for _, y, xx in nb])
            a = torch.sigmoid(gate_logit[y0, x0])
            torch.testing.assert_close(out[0, :, Y, X], a * aligned[:, Y, X] + (1 - a) * mixed,
                                       atol=1e-5, rtol=1e-5)


def test_fade_at_init_is_half_guide_half_local_mean():
    up = make_upsampler({"name": "fade", "up_kernel": K}, 4, 4, S, guide_channels=4)
    nn.init.zeros_(up.kernel_conv.weight)                    # exactly uniform kernels
    x, g = torch.randn(1, 4, H, W), torch.randn(1, 4, S * H, S * W)
    mean = F.avg_pool2d(x, K, 1, K // 2, count_include_pad=False)   # mean of in-image neighbours
    want = 0.5 * g + 0.5 * F.interpolate(mean, scale_factor=S, mode="nearest")
    torch.testing.assert_close(up(x, guide=g), want, atol=1e-5, rtol=1e-5)


def test_sapa_at_init_is_close_to_the_local_mean():
    torch.manual_seed(0)
    up = make_upsampler("sapa", 16, 16, S, guide_channels=16)
    x, g = torch.randn(1, 16, H, W), torch.randn(1, 16, S * H, S * W)
    mean = F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    near = F.interpolate(mean, scale_factor=S, mode="nearest")
    assert (up(x, guide=g) - near).abs().max() < 0.1 * x.abs().max()


def test_reassemble_with_a_one_hot_kernel_is_nearest_upsampling():
    x = torch.randn(2, 3, H, W)
    logits = torch.full((2, K * K, S * S, H, W), -1e4)
    logits[:, K * K // 2] = 0                                 # all weight on the centre
    y = from_phases(reassemble(x, neighbour_softmax(logits, K), K), S)
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=S, mode="nearest"))


def test_guide_is_required_at_run_time():
    up = make_upsampler("sapa", 4, 4, 2)
    with pytest.raises(ValueError, match="sapa needs a guide"):
        up(torch.randn(1, 4, 3, 3))
