"""IndexNet (decoder index), A2U and FreqFusion against their definitions, point by point."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decoders import local_ops
from decoders.a2u import adaptive_mean
from decoders.freqfusion_ops import resample, with_neighbour_cosine
from decoders.reassembly import neighbour_softmax, reassemble
from decoders.upsample import make_upsampler, upsampler_class

NAMES = ["guided_indexnet", "a2u", "freqfusion"]
H, W = 3, 4  # low-res size: small enough to loop over


def randomised(up, std=0.5):
    """Weights far from their initialisation, so kernels and indices really vary."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in up.parameters():
            p.normal_(0, std)
    return up


def in_image(y, x, k, h=H, w=W):
    """(index in the k*k window, y, x) of the in-image neighbours of (y, x)."""
    r = k // 2
    return [(i * k + j, y + i - r, x + j - r) for i in range(k) for j in range(k)
            if 0 <= y + i - r < h and 0 <= x + j - r < w]


def test_all_three_read_the_guide_and_nothing_else():
    for name in NAMES:
        cls = upsampler_class(name)
        assert cls.needs_guide and not cls.needs_switches, name


@pytest.mark.parametrize("name", NAMES)
def test_guide_is_required_at_run_time(name):
    up = make_upsampler(name, 8, 8, 2)
    with pytest.raises(ValueError, match=f"{name} needs a guide"):
        up(torch.randn(1, 8, 3, 3))


@pytest.mark.train
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_exact_odd_output_sizes_and_gradients_reach_every_parameter(name, scale):
    up = make_upsampler(name, 16, 8, scale, guide_channels=12).train()
    size = (5 * scale - scale + 1, 7 * scale - 1)  # odd, and short of the full grid
    x, g = torch.randn(2, 16, 5, 7), torch.randn(2, 12, *size)
    y = up(x, guide=g, output_size=size)
    assert y.shape == (2, 8, *size) and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    dead = [n for n, p in up.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


# ----------------------------------------------------------------------------- reassembly

@pytest.mark.parametrize("scale,k", [(1, 3), (2, 5), (4, 3)])
def test_reassemble_is_a_weighted_sum_over_in_image_neighbours(scale, k):
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    logits = torch.randn(2, k * k, H * scale, W * scale, dtype=torch.float64)
    prior = torch.randn(k * k, dtype=torch.float64)
    kernels = neighbour_softmax(logits, k, scale, prior)
    out = reassemble(x, kernels, k, scale)
    for Y in range(H * scale):
        for X in range(W * scale):
            nb = in_image(Y // scale, X // scale, k)
            z = torch.stack([logits[:, j, Y, X] + prior[j] for j, _, _ in nb], 1)
            wts = z.softmax(1)
            torch.testing.assert_close(kernels[:, [j for j, _, _ in nb], Y, X], wts)
            assert kernels[:, :, Y, X].sum(1).sub(1).abs().max() < 1e-12  # outside: exactly 0
            want = sum(wts[:, m, None] * x[:, :, y, xx] for m, (_, y, xx) in enumerate(nb))
            torch.testing.assert_close(out[:, :, Y, X], want)


# ----------------------------------------------------------------------------- IndexNet

@pytest.mark.parametrize("scale,context", [(2, True), (2, False), (4, True)])
def test_guided_indexnet_gates_each_source_value_with_an_index_of_the_guide_window(scale, context):
    """Holistic, linear: index(Y, X) = sigmoid(sum over the guide window of the block of
    (Y, X) of the weights of its sub-pixel position); out = index * x at the source pixel."""
    up = make_upsampler({"name": "guided_indexnet", "nonlinear": False, "context": context},
                        3, 3, scale, guide_channels=2).double()
    randomised(up)
    x = torch.randn(1, 3, H, W, dtype=torch.float64)
    g = torch.randn(1, 2, H * scale, W * scale, dtype=torch.float64)
    with torch.no_grad():
        out = up(x, guide=g)
    weight = up.index_block[0].weight                       # (s*s, C_g, k, k)
    k, pad = weight.shape[-1], (scale // 2 if context else 0)
    gp = F.pad(g, (pad, pad, pad, pad))[0]
    for Y in range(H * scale):
        for X in range(W * scale):
            y, x0 = Y // scale, X // scale
            phase = (Y % scale) * scale + X % scale
            window = gp[:, y * scale:y * scale + k, x0 * scale:x0 * scale + k]
            index = torch.sigmoid((weight[phase] * window).sum())
            torch.testing.assert_close(out[0, :, Y, X], index * x[0, :, y, x0])


def test_guided_indexnet_depthwise_has_one_index_per_channel_and_position():
    s, c = 2, 3
    up = make_upsampler({"name": "guided_indexnet", "index": "depthwise", "nonlinear": False,
                         "context": False}, 4, c, s, guide_channels=2).double()
    randomised(up)
    x = torch.randn(1, 4, H, W, dtype=torch.float64)
    g = torch.randn(1, 2, H * s, W * s, dtype=torch.float64)
    with torch.no_grad():
        out = up(x, guide=g)
        values = up.project(x)[0]
    weight = up.index_block[0].weight                       # (s*s*C, C_g, s, s): (position, channel)
    for Y in range(H * s):
        for X in range(W * s):
            y, x0, phase = Y // s, X // s, (Y % s) * s + X % s
            window = g[0, :, y * s:y * s + s, x0 * s:x0 * s + s]
            for ch in range(c):
                index = torch.sigmoid((weight[phase * c + ch] * window).sum())
                torch.testing.assert_close(out[0, ch, Y, X], index * values[ch, y, x0])


def test_guided_indexnet_at_init_scales_each_source_value_by_one_index_in_0_1():
    up = make_upsampler("guided_indexnet", 6, 6, 2, guide_channels=4).eval()
    x = torch.randn(2, 6, H, W).abs() + 0.1
    with torch.no_grad():
        ratio = up(x, guide=torch.randn(2, 4, 2 * H, 2 * W)) / F.interpolate(x, scale_factor=2)
    assert ratio.min() > 0 and ratio.max() < 1 and ratio.std() > 0.01
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # holistic: shared by channels


def test_guided_indexnet_refuses_an_unknown_index_block():
    with pytest.raises(ValueError, match="index must be holistic or depthwise, got 'o2o'"):
        make_upsampler({"name": "guided_indexnet", "index": "o2o"}, 4, 4, 2)


# ----------------------------------------------------------------------------- A2U

@pytest.mark.parametrize("size", [(7, 9), (12, 12), (5, 13)])
def test_adaptive_mean_equals_adaptive_average_pooling(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(adaptive_mean(x, 6), F.adaptive_avg_pool2d(x, 6))


@pytest.mark.parametrize("scale,rank", [(2, 1), (2, 2), (4, 1)])
def test_a2u_kernels_are_a_low_rank_bilinear_form_of_the_guide(scale, rank):
    K, C = 3, 4
    up = randomised(make_upsampler({"name": "a2u", "rank": rank}, 3, 3, scale,
                                   guide_channels=C).double())
    x = torch.randn(1, 3, H, W, dtype=torch.float64)
    g = torch.randn(1, C, H * scale, W * scale, dtype=torch.float64)
    with torch.no_grad():
        out = up(x, guide=g)
        pooled = F.adaptive_avg_pool2d(g, 3 * scale)
        mixer = up.mixer(g.mean((2, 3), keepdim=True))[0, :, 0, 0].reshape(K * K * scale ** 2, rank)
        branches = []
        for conv, norm in ((up.filter_u, up.norm_u), (up.filter_v, up.norm_v)):
            filt = conv(pooled)[0]                                  # (d, 3s, 3s)
            gp = F.pad(g, (scale,) * 4)[0]
            a = torch.zeros(rank, C, H, W, dtype=torch.float64)
            for j in range(rank):
                for y in range(H):
                    for xx in range(W):
                        window = gp[:, y * scale:y * scale + 3 * scale, xx * scale:xx * scale + 3 * scale]
                        a[j, :, y, xx] = (filt[j] * window).sum((1, 2))
            branches.append(F.leaky_relu(norm(a), 0.01))            # GroupNorm per rank
        affinity = (branches[0] * branches[1]).sum(1) / math.sqrt(C)   # (d, h, w)
    for Y in range(H * scale):
        for X in range(W * scale):
            y, xx, phase = Y // scale, X // scale, (Y % scale) * scale + X % scale
            nb = in_image(y, xx, K)
            z = torch.stack([mixer[j * scale ** 2 + phase] @ affinity[:, y, xx] for j, _, _ in nb])
            wts = torch.sigmoid(z).softmax(0)
            want = sum(wt * x[0, :, ny, nx] for wt, (_, ny, nx) in zip(wts, nb))
            torch.testing.assert_close(out[0, :, Y, X], want)


def test_a2u_at_init_is_a_local_mean_with_weights_within_a_factor_e():
    up = make_upsampler("a2u", 8, 8, 2, guide_channels=8)
    x, g = torch.randn(1, 8, H, W), torch.randn(1, 8, 2 * H, 2 * W)
    with torch.no_grad():
        kernels = up.kernels(x, g)
        out = up(x, guide=g)
    for Y in range(2 * H):
        for X in range(2 * W):
            nb = [j for j, _, _ in in_image(Y // 2, X // 2, 3)]
            n, wts = len(nb), kernels[0, nb, Y, X]
            assert 1 / (1 + (n - 1) * math.e) <= wts.min() and wts.max() <= math.e / (math.e + n - 1)
            assert wts.max() / wts.min() < math.e
    constant = up(torch.full_like(x, 0.3), guide=g)                  # convex: constants stay
    torch.testing.assert_close(constant, torch.full_like(out, 0.3))


# ----------------------------------------------------------------------------- FreqFusion

def test_neighbour_cosine_matches_a_loop():
    x = torch.randn(1, 5, 6, 7, dtype=torch.float64)
    both = with_neighbour_cosine(x)
    torch.testing.assert_close(both[:, :5], x)
    sims = both[:, 5:]
    offsets = [(i, j) for i in (-2, 0, 2) for j in (-2, 0, 2) if (i, j) != (0, 0)]
    for Y in range(6):
        for X in range(7):
            for m, (dy, dx) in enumerate(offsets):
                inside = 0 <= Y + dy < 6 and 0 <= X + dx < 7
                want = F.cosine_similarity(x[0, :, Y, X], x[0, :, Y + dy, X + dx], dim=0) if inside else 0.0
                torch.testing.assert_close(sims[0, m, Y, X], torch.as_tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("scale", [2, 4])
def test_resample_at_the_initial_positions_is_the_identity_and_offsets_are_in_source_pixels(scale):
    from decoders.freqfusion_ops import OffsetGenerator
    gen = OffsetGenerator(8, scale, groups=2)
    feature = torch.randn(1, 4, H * scale, W * scale)
    init = gen.init_pos.expand(1, -1, H, W)
    torch.testing.assert_close(resample(feature, init, 2, scale), feature)
    shifted = init.clone()
    shifted[:, :init.shape[1] // 2] += 1.0                            # x offsets: one source pixel right
    want = F.pad(feature[..., scale:], (0, scale, 0, 0), mode="replicate")  # border padding past the edge
    torch.testing.assert_close(resample(feature, shifted, 2, scale), want)


@pytest.mark.parametrize("scale", [2, 4])
def test_freqfusion_is_lowpass_upsampling_plus_the_high_pass_sharpened_guide(scale):
    """Without resampling: out = sum_k L_k x[nb_k] + A(2 G - sum_k H_k G[nb_k]), both kernels
    softmax-normalised over in-image neighbours (5 x 5 at the source, 3 x 3 at the point)."""
    up = make_upsampler({"name": "freqfusion", "resample": False}, 3, 2, scale,
                        guide_channels=4).double()
    randomised(up, std=0.3)
    x = torch.randn(1, 3, H, W, dtype=torch.float64)
    g = torch.randn(1, 4, H * scale, W * scale, dtype=torch.float64)
    with torch.no_grad():
        out = up(x, guide=g)
        low, high, _, _ = up.filters(x, g)
        low = local_ops.from_phases(low, scale)
        values, aligned = up.project(x)[0], up.align(g)[0]
    Hs, Ws = H * scale, W * scale
    for kernels, k, h, w in ((low, 5, H, W), (high, 3, Hs, Ws)):
        s = Hs // h
        for Y in range(Hs):
            for X in range(Ws):
                nb = [j for j, _, _ in in_image(Y // s, X // s, k, h, w)]
                torch.testing.assert_close(kernels[0, nb, Y, X].sum(), torch.tensor(1.0, dtype=torch.float64))
                assert (kernels[0, :, Y, X] >= 0).all() and kernels[0, :, Y, X].sum() - 1 < 1e-12
    for Y in range(Hs):
        for X in range(Ws):
            up_part = sum(low[0, j, Y, X] * values[:, y, xx] for j, y, xx in in_image(Y // scale, X // scale, 5))
            lowpass_g = sum(high[0, j, Y, X] * aligned[:, y, xx] for j, y, xx in in_image(Y, X, 3, Hs, Ws))
            torch.testing.assert_close(out[0, :, Y, X], up_part + 2 * aligned[:, Y, X] - lowpass_g)


def hamming_mean(x, k):
    """Hamming-window-weighted mean of the in-image k x k neighbours of every pixel."""
    window = torch.from_numpy(np.outer(np.hamming(k), np.hamming(k))).to(x.dtype)
    c = x.shape[1]
    total = F.conv2d(x, window.expand(c, 1, k, k), padding=k // 2, groups=c)
    weight = F.conv2d(torch.ones_like(x[:, :1]), window.view(1, 1, k, k), padding=k // 2)
    return total / weight


def test_freqfusion_at_init_is_a_hamming_mean_of_the_coarse_map_plus_the_sharpened_guide():
    """With the kernel and offset generators at exactly zero (the authors' init is std 0.001),
    the kernels are the Hamming window and the resampling is the identity."""
    up = make_upsampler("freqfusion", 8, 8, 2, guide_channels=8).double()
    with torch.no_grad():
        for conv in (up.lowpass, up.highpass, up.offsets.low, up.offsets.high):
            conv.weight.zero_()
    x = torch.randn(2, 8, H + 2, W + 2, dtype=torch.float64)
    g = torch.randn(2, 8, 2 * H + 4, 2 * W + 4, dtype=torch.float64)
    want = F.interpolate(hamming_mean(x, 5), scale_factor=2, mode="nearest") + 2 * g - hamming_mean(g, 3)
    # the resampling runs in float32 whatever the input's dtype (positions stay exact under bf16)
    torch.testing.assert_close(up(x, guide=g), want, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- export

@pytest.mark.slow  # 2 to 22 min each on a busy 2-core machine (freqfusion: measured 1302 s)
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("name", NAMES)
def test_export_to_onnx_with_dynamic_sizes(tmp_path, name):
    """ONNX with dynamic sizes, equal to eager at two sizes and at 97x131, a size whose
    encoder features do not halve exactly (a2u and freqfusion exported there once the
    guide's fit to the s*h x s*w grid stopped comparing sizes under tracing; measured
    2026-12-05: a2u 247 s, freqfusion 681 s)."""
    import onnxruntime as ort

    import zoo
    from zoo.inference.export import export_model
    model = zoo.create("unet", encoder="test_resnet", upsample=name, num_classes=3,
                       decoder_channels=(16, 8, 8, 8, 8)).eval()
    report = export_model(model, tmp_path, formats=("onnx",), size=(64, 64), check_size=(96, 128),
                          odd_size=(97, 131), name=name)
    onnx = report["onnx"]
    assert onnx["ok"] and onnx["dynamic"] and onnx["parity"] < 1e-4, onnx
    assert onnx["any_size"], onnx["limit"]
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    for size in ((64, 64), (96, 128)) + (((97, 131),) if onnx["any_size"] else ()):
        x = torch.randn(1, 3, *size)
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            assert np.abs(out - model(x).numpy()).max() < 1e-4

