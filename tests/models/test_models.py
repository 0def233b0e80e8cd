"""Every architecture x every upsampler x three timm families, and what each paper says."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from decoders.upsample import UPSAMPLERS, Upsampler, upsampler_class
from zoo.models.registry import MODELS, architectures

# Small widths keep CPU tests fast; the structure is the real one. Each architecture
# declares them where it is registered (`@register_model(tiny={...})`).
ARCHS = {arch: dict(MODELS.info(arch)["tiny"] or {}) for arch in architectures(presets=False)}
ENCODERS = ["test_resnet", "test_efficientnet", "test_convnext"]
SWITCH_ENCODER = "vgg11_bn"  # max-pools at every level: what unpool needs


def build(arch, upsample, encoder="test_resnet", **kwargs):
    args = dict(ARCHS[arch])
    if upsampler_class(upsample).needs_switches:
        encoder = SWITCH_ENCODER
        if arch == "pspnet":
            args["output_stride"] = 32  # VGG does not dilate
    return zoo.create(arch, encoder=encoder, upsample=upsample, num_classes=5, **args, **kwargs)


def test_every_registered_architecture_declares_its_tiny_arguments():
    from zoo.inference.export import exportable_architectures as exported
    assert set(exported()) == set(ARCHS) >= {"fcn8s", "unet", "deconvnet", "segnet", "pspnet"}
    missing = [a for a in architectures(presets=False) if MODELS.info(a).get("tiny") is None]
    assert not missing, f"register these with @register_model(tiny={{...}}): {missing}"
    assert MODELS.info("unet_resnet34")["tiny"] == ARCHS["unet"]  # a preset's are its builder's


def _slow_when(slow: set, *names):
    """The parameter combination, marked slow when it is one of `slow` (still run by `-m slow`)."""
    return pytest.param(*names, marks=pytest.mark.slow) if names in slow else pytest.param(*names)


# FCN-32s x FreqFusion fuses five x2 steps up to the input's size: 6-14 s each on a 2-core CPU. One
# encoder (and FCN-16s's four steps everywhere) stays in the default run; the rest run with -m slow.
_SLOW_ODD = {("fcn32s", "freqfusion", e) for e in ENCODERS[1:]}
_SLOW_BF16 = {("fcn32s", "freqfusion")}


@pytest.mark.train
@pytest.mark.parametrize("arch, upsample, encoder", [
    _slow_when(_SLOW_ODD, a, u, e) for a in ARCHS for u in UPSAMPLERS if not upsampler_class(u).needs_switches
    for e in ENCODERS])
def test_forward_backward_odd_size(arch, upsample, encoder):
    model = build(arch, upsample, encoder)
    x = torch.randn(2, 3, 97, 131)
    logits, aux = model(x, aux=True)
    assert logits.shape == (2, 5, 97, 131)
    assert (aux is None) == (arch != "pspnet")
    loss = logits.logsumexp(1).mean() + (aux.logsumexp(1).mean() if aux is not None else 0)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"no gradient reaches {dead[:5]}"


@pytest.mark.train
@pytest.mark.parametrize("arch", list(ARCHS))
def test_unpool_with_true_switches_at_odd_size(arch):
    model = build(arch, "unpool")
    x = torch.randn(1, 3, 65, 67)  # VGG floors odd sizes: the switches decide
    logits, aux = model(x, aux=True)
    assert logits.shape == (1, 5, 65, 67)
    (logits.logsumexp(1).mean() + (aux.mean() if aux is not None else 0)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    rows = model.upsampling()
    assert rows and all(r["method"] == "unpool" and r["reads"].startswith("switches: encoder max-pool")
                        for r in rows)


@pytest.mark.parametrize("arch", ["fcn8s", "unet", "deconvnet", "segnet", "pspnet"])
def test_unpool_refuses_encoders_without_switches_naming_the_way_out(arch):
    with pytest.raises(ValueError, match=r"needs max-pool switches at .* 'test_resnet' has max-pool "
                                         r"switches only at /2 \(maxpool\).*guided_unpool"):
        zoo.create(arch, encoder="test_resnet", upsample="unpool", num_classes=3, **ARCHS[arch])


def test_guided_unpool_reports_what_it_reads():
    model = zoo.create("unet", encoder="test_resnet", upsample="guided_unpool", num_classes=3)
    rows = model.upsampling()
    assert [(r["from"], r["to"]) for r in rows] == [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
    assert rows[0]["reads"] == "switches: 2x2 maxima of encoder feature at /16"
    assert rows[-1]["reads"] == "switches: 2x2 maxima of the input image"
    assert not model.encoder.capture_switches


@pytest.mark.train
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (64, 65)])
def test_any_size_from_32(size):
    model = zoo.create("unet", encoder="test_resnet", upsample="guided_unpool", num_classes=3).eval()
    assert model(torch.randn(1, 3, *size)).shape[-2:] == size


# ----------------------------------------------------------------------------- fidelity

@pytest.mark.train
def test_fcn_takes_its_skips_from_pool4_and_pool3():
    """On VGG16 the paper's skips are pool4 (/16) and pool3 (/8): the max-pools'
    outputs, not conv5_3 / conv4_3 that timm's feature_info points at."""
    model = zoo.create("fcn8s", encoder="vgg16_bn", num_classes=4, fc_channels=16)
    assert model.head.skip_sources == {16: "max-pool features_33", 8: "max-pool features_23"}
    pools = dict(model.encoder.body.named_modules())
    assert isinstance(pools["features_33"], nn.MaxPool2d) and isinstance(pools["features_23"], nn.MaxPool2d)
    fed, pooled = {}, {}

    def keep(store, key, output=False):
        def hook(module, inputs, out):
            store[key] = out if output else inputs[0]
        return hook
    model.head.skip_scores[0].register_forward_hook(keep(fed, 16))
    model.head.skip_scores[1].register_forward_hook(keep(fed, 8))
    pools["features_33"].register_forward_hook(keep(pooled, 16, output=True))
    pools["features_23"].register_forward_hook(keep(pooled, 8, output=True))
    model(torch.randn(1, 3, 64, 64))
    assert fed[16] is pooled[16] and fed[8] is pooled[8]
    resnet = zoo.create("fcn8s", encoder="test_resnet", num_classes=4, fc_channels=16)
    assert resnet.head.skip_sources == {16: "feature 3", 8: "feature 2"}


def test_fcn_has_fc6_fc7_as_in_the_paper():
    import inspect
    assert inspect.signature(MODELS.get("fcn8s")).parameters["fc_channels"].default == 4096
    model = zoo.create("fcn8s", encoder="test_resnet", num_classes=3, fc_channels=24)
    fc = model.head.fc
    assert (fc.fc6.kernel_size, fc.fc6.in_channels, fc.fc6.out_channels) == ((7, 7), 96, 24)
    assert (fc.fc7.kernel_size, fc.fc7.out_channels) == ((1, 1), 24)
    assert fc.drop6.p == fc.drop7.p == 0.5
    assert len(model.head.skip_scores) == 2
    assert all(s.weight.abs().sum() == 0 for s in model.head.skip_scores)  # zero-initialised


def test_fcn_fc6_fc7_dropout_drops_elements_not_channels():
    # Caffe's Dropout after fc6/fc7 zeroes single activations; channel dropout would zero whole maps.
    model = zoo.create("fcn8s", encoder="test_resnet", num_classes=3, fc_channels=16).train()
    torch.manual_seed(0)
    for drop in (model.head.fc.drop6, model.head.fc.drop7):
        out = drop(torch.ones(2, 16, 8, 8))
        kept = (out != 0).flatten(2).float().mean(-1)  # per (image, channel): share of the map kept
        assert ((kept > 0) & (kept < 1)).all()  # every map partly dropped: no channel all kept or all gone
        assert 0.4 < kept.mean() < 0.6
        torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 2.0))  # scaled by 1/(1-p)


@pytest.mark.train
def test_vgg_imagenet_fc6_fc7_are_loaded_where_they_fit():
    from zoo.models.base import load_pretrained_fc

    class FakeEncoder:
        pretrained_fc = {"fc6.weight": torch.randn(16, 96, 7, 7), "fc6.bias": torch.randn(16),
                         "fc7.weight": torch.randn(16, 16, 1, 1), "fc7.bias": torch.randn(16)}

    model = zoo.create("fcn8s", encoder="test_resnet", num_classes=3, fc_channels=16)
    fc = model.head.fc
    targets = {"fc6.weight": fc.fc6.weight, "fc6.bias": fc.fc6.bias,
               "fc7.weight": fc.fc7.weight, "fc7.bias": fc.fc7.bias}
    assert load_pretrained_fc(targets, FakeEncoder, "fcn8s")
    torch.testing.assert_close(fc.fc6.weight, FakeEncoder.pretrained_fc["fc6.weight"])
    torch.testing.assert_close(fc.fc7.bias, FakeEncoder.pretrained_fc["fc7.bias"])
    deconv = zoo.create("deconvnet", encoder="test_resnet", upsample="bilinear", num_classes=3,
                         fc_channels=16)
    assert load_pretrained_fc(deconv.head.fc_parameters(), FakeEncoder, "deconvnet")
    torch.testing.assert_close(deconv.head.bottleneck.fc6[0].weight, FakeEncoder.pretrained_fc["fc6.weight"])
    assert set(deconv.head.fc_parameters()) == {"fc6.weight", "fc7.weight"}  # batchnorm follows: no bias
    bare = zoo.create("deconvnet", encoder="test_resnet", upsample="bilinear", num_classes=3, fc_channels=16,
                      norm_layer="none")  # no norm layer: the ImageNet biases come too
    assert load_pretrained_fc(bare.head.fc_parameters(), FakeEncoder, "deconvnet")
    torch.testing.assert_close(bare.head.bottleneck.fc7[0].bias, FakeEncoder.pretrained_fc["fc7.bias"])
    wide = zoo.create("fcn8s", encoder="test_resnet", num_classes=3, fc_channels=32)
    with pytest.warns(UserWarning, match="do not fit this head's"):
        assert not load_pretrained_fc({"fc6.weight": wide.head.fc.fc6.weight,
                                       "fc7.weight": wide.head.fc.fc7.weight}, FakeEncoder, "fcn8s")


def level_convs(model):
    """Per decoder level: 3x3 convolutions in the upsampler and in the level's block."""
    head = model.head
    def n3(m):
        return sum(isinstance(c, (nn.Conv2d, nn.ConvTranspose2d)) and c.kernel_size == (3, 3)
                   for c in m.modules())
    return [(n3(up), n3(block)) for up, block in zip(head.ups, head.blocks)]


@pytest.mark.train
def test_deconvnet_depth_does_not_change_with_the_upsampler():
    """The ablation compares upsamplers, not depths: every level has the same
    deconvolutions after its upsampler, and unpooling adds no convolution of its own."""
    depths = (3, 3, 3, 2, 2)
    unpool = zoo.create("deconvnet", encoder="vgg11_bn", upsample="unpool", num_classes=3, fc_channels=16)
    assert level_convs(unpool) == [(0, d) for d in depths]
    for up in ("bilinear", "guided_unpool", "nearest"):
        other = zoo.create("deconvnet", encoder="vgg11_bn", upsample=up, num_classes=3, fc_channels=16)
        assert level_convs(other) == level_convs(unpool)
        assert [b.state_dict()["0.0.weight"].shape for b in other.head.blocks] == \
               [b.state_dict()["0.0.weight"].shape for b in unpool.head.blocks]


@pytest.mark.train
def test_deconvnet_and_segnet_mirror_vgg16_with_its_switches():
    model = zoo.create("deconvnet", num_classes=21, fc_channels=64)
    assert model.encoder.name == "vgg16_bn"
    assert model.encoder.switch_channels == {1: 64, 2: 128, 4: 256, 8: 512, 16: 512}
    assert [r["reads"] for r in model.upsampling()] == [
        f"switches: encoder max-pool features_{i}" for i in (43, 33, 23, 13, 6)]
    assert model(torch.randn(1, 3, 65, 67)).shape == (1, 21, 65, 67)  # VGG floors odd sizes
    segnet = zoo.create("segnet", num_classes=11)
    assert isinstance(segnet.head.bottleneck, nn.Identity)  # SegNet: no fc bottleneck
    assert [b[-1][0].out_channels for b in segnet.head.blocks] == [512, 256, 128, 64, 64]
    assert segnet(torch.randn(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_pspnet_is_dilated_by_default_with_aux():
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=4, head_channels=16)
    assert model.encoder.reductions[-1] == 8
    assert model.aux_head is not None
    assert len(model.head.ppm.stages) == 4


@pytest.mark.train
def test_pspnet_trains_at_one_image_per_process():
    """The usual per-GPU batch for large crops; BatchNorm on the 1x1 bin cannot take it."""
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=4, head_channels=16).train()
    logits, aux = model(torch.randn(1, 3, 64, 64), aux=True)
    (logits.mean() + aux.mean()).backward()
    one_bin = model.head.ppm.stages[0][1]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in one_bin.modules())
    assert one_bin[0].bias is not None


def test_output_stride_16_unet():
    model = zoo.create("unet", encoder="test_resnet", output_stride=16, num_classes=3)
    assert model.encoder.reductions == [2, 4, 8, 16, 16]
    assert model(torch.randn(1, 3, 45, 50)).shape == (1, 3, 45, 50)


def test_norm_and_act_layers_are_configurable():
    model = zoo.create("unet", encoder="test_resnet", num_classes=3, norm_layer="groupnorm",
                       act_layer="silu", decoder_channels=(32, 24, 16, 8, 8))
    head_types = {type(m).__name__ for m in model.head.modules()}
    assert "GroupNorm" in head_types and "SiLU" in head_types and "BatchNorm2d" not in head_types
    plain = zoo.create("pspnet", encoder="test_resnet", num_classes=3, norm_layer="none", head_channels=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.head.modules())
    with pytest.raises(ValueError, match="unknown norm_layer 'batchnrom'"):
        zoo.create("unet", encoder="test_resnet", num_classes=3, norm_layer="batchnrom")


def test_config_rebuilds_the_same_model():
    model = zoo.create("unet", encoder="test_efficientnet", upsample="carafe", num_classes=7,
                       output_stride=None)
    assert model.config == {"name": "unet", "encoder": "test_efficientnet",
                            "upsample": "carafe", "num_classes": 7}
    again = zoo.create(**model.config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


# ----------------------------------------------------------------------------- plug-ins

class SharpUpsample(Upsampler):
    """An upsampler defined here, outside the package: nearest resize of a 1x1
    projection, minus a learned multiple of its local mean (a sharpening)."""

    needs_guide = True

    def __init__(self, in_channels, out_channels, scale, guide_channels=None, amount: float = 0.1):
        super().__init__(in_channels, out_channels, scale)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.amount = nn.Parameter(torch.tensor(amount))
        self.guide_channels = guide_channels

    def forward(self, x, guide=None, indices=None, output_size=None):
        assert guide is not None and guide.shape[1] == self.guide_channels
        y = F.interpolate(self.proj(x), size=self.target(x, output_size), mode="nearest")
        return y - self.amount * F.avg_pool2d(y, 3, 1, 1)


@pytest.mark.train
@pytest.mark.parametrize("arch", list(ARCHS))
def test_an_upsampler_from_outside_runs_in_every_architecture(arch):
    model = zoo.create(arch, encoder="test_resnet", upsample={"name": f"{__name__}:SharpUpsample",
                                                             "amount": 0.2},
                       num_classes=3, **ARCHS[arch])
    ups = [m for m in model.head.modules() if isinstance(m, SharpUpsample)]
    assert ups and all(u.amount.item() == pytest.approx(0.2) for u in ups)
    y = model(torch.randn(2, 3, 50, 70))
    assert y.shape == (2, 3, 50, 70)
    y.mean().backward()
    assert all(u.amount.grad is not None for u in ups)


# ----------------------------------------------------------------------------- learning

def toy_problem(n=8, size=32, classes=3, seed=0):
    """Images whose class map is a fixed function of the pixels: bright discs on
    a dark ground, hue telling two disc classes apart."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(n):
        mask = torch.zeros(size, size, dtype=torch.long)
        for k in (1, 2):
            cy, cx = torch.randint(6, size - 6, (2,), generator=g)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = k
        image = torch.stack([(mask == 1).float(), (mask == 2).float(), (mask > 0).float()]) * 2 - 1
        images.append(image + 0.1 * torch.randn(3, size, size, generator=g))
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


def train_loss(model, lr, steps):
    x, y = toy_problem()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(x, aux=True)
        loss = F.cross_entropy(out[0], y) + (0.4 * F.cross_entropy(out[1], y) if out[1] is not None else 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


LEARN = {"fcn32s": "transposed", "fcn16s": "transposed", "fcn8s": "transposed", "unet": "bilinear",
         "deconvnet": "guided_unpool", "segnet": "guided_unpool", "pspnet": "bilinear"}


@pytest.mark.train
@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_architecture_learns(arch):
    """60 Adam steps on a fixed toy problem cut the loss at least 2x (at lr 0 it stays
    put). Measured 2026-12-02: 3x (FCN-32s, whose /32 scores barely resolve 10 px
    discs on 32x32 images) to over 100x (FCN-8s)."""
    torch.manual_seed(0)
    kwargs = {"dropout": 0.0} if arch.startswith(("fcn", "pspnet")) else {}
    model = zoo.create(arch, encoder="test_resnet", upsample=LEARN[arch], num_classes=3,
                       **ARCHS[arch], **kwargs)
    losses = train_loss(model, lr=1e-2, steps=60)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 / 2, losses[::5]


@pytest.mark.train
def test_the_learning_test_fails_at_lr_zero():
    torch.manual_seed(0)
    model = zoo.create("unet", encoder="test_resnet", num_classes=3, **ARCHS["unet"])
    losses = train_loss(model, lr=0.0, steps=10)
    assert sum(losses[-3:]) / 3 > sum(losses[:3]) / 3 / 2


# ----------------------------------------------------------------------------- CUDA defaults on CPU

@pytest.mark.train
@pytest.mark.parametrize("arch, upsample", [_slow_when(_SLOW_BF16, a, u) for a in ARCHS for u in UPSAMPLERS])
def test_bf16_autocast_and_channels_last_training_step(arch, upsample):
    """The CUDA defaults (bf16 autocast, channels_last), exercised on the CPU: a
    training step gives finite logits and gradients of the right shape, within
    5% (relative L2) of the fp32 logits of the same weights."""
    torch.manual_seed(0)
    model = build(arch, upsample, **({"dropout": 0.0} if arch.startswith(("fcn", "pspnet")) else {}))
    # With fc6 (7x7), 224 px, so every map at /32 is at least the kernel: on 2x2 maps torch
    # 2.14's CPU bf16 channels_last weight gradient of a 7x7 convolution was non-finite now and then.
    size = 224 if any(getattr(m, "kernel_size", None) == (7, 7) for m in model.modules()) else 64
    x = torch.randn(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model = model.to(memory_format=torch.channels_last).train()
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.eval()(xc).float()
    assert low.shape == ref.shape and torch.isfinite(low).all()
    # guided_unpool picks the maximum of each 2x2 window of a guide feature: where two
    # values there are closer than bf16's resolution, the pick (and the pixel it feeds) flips.
    tolerance = 0.1 if upsample == "guided_unpool" else 0.05
    assert (low - ref).norm() / ref.norm() < tolerance
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux = model(xc, aux=True)
        target = torch.randint(0, 5, (2, size, size))
        loss = F.cross_entropy(logits.float(), target)
        if aux is not None:
            loss = loss + 0.4 * F.cross_entropy(aux.float(), target)
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not bad, bad[:5]
