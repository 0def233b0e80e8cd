"""Plain ViTs as pyramid encoders (ViTDet's simple feature pyramid) in every
architecture, at sizes that are not a multiple of the patch; a windowed one (Swin)."""
import pytest
import torch
import torch.nn.functional as F

import zoo
from tests.models.test_models import ARCHS
from zoo.models.encoders import Encoder

SIZE = (70, 90)  # neither a multiple of 16 nor of 32


def ceil_sizes(size, reductions):
    return [((size[0] + r - 1) // r, (size[1] + r - 1) // r) for r in reductions]


def test_pyramid_levels_channels_and_ceil_sizes():
    enc = Encoder("test_vit")
    assert enc.patch_size == 16 and enc.reductions == [4, 8, 16, 32] and enc.channels == [16, 32, 64, 64]
    assert enc.info.switch_channels == {}        # no max-pool: nothing to unpool with
    x = torch.randn(1, 3, *SIZE)
    feats = enc(x).features
    assert [tuple(f.shape[-2:]) for f in feats] == ceil_sizes(SIZE, enc.reductions)
    assert [f.shape[1] for f in feats] == enc.channels
    # /16 is the last block's tokens on the zero-padded image; /32 their 2x2 max (ceil mode)
    vit = enc.body.vit
    tokens = vit.forward_intermediates(F.pad(x, (0, 6, 0, 10)), indices=[len(vit.blocks) - 1],
                                       intermediates_only=True)[0]
    torch.testing.assert_close(feats[2], tokens)
    torch.testing.assert_close(feats[3], F.max_pool2d(tokens, 2, 2, ceil_mode=True))


def test_levels_from_chosen_blocks():
    enc = Encoder("test_vit", vit_blocks=[1, 2, 3, -1])
    assert enc.body.blocks == [1, 2, 3, 5]
    x = torch.randn(1, 3, 64, 64)
    tokens = enc.body.vit.forward_intermediates(x, indices=[3, 5], intermediates_only=True)
    feats = enc(x).features
    torch.testing.assert_close(feats[2], tokens[0])                       # /16 from block 3
    torch.testing.assert_close(feats[3], F.max_pool2d(tokens[1], 2, 2))   # /32 from block 5
    with pytest.raises(ValueError, match=r"vit_blocks \[1, 2\] must give 4 block indices.*\[0, 6\)"):
        Encoder("test_vit", vit_blocks=[1, 2])
    with pytest.raises(ValueError, match="vit_blocks is for plain ViT encoders; 'test_resnet'"):
        Encoder("test_resnet", vit_blocks=[1, 2, 3, 4])


def test_output_stride_keeps_the_levels_down_to_it():
    assert Encoder("test_vit", output_stride=8).reductions == [4, 8]
    assert Encoder("test_vit", output_stride=16).channels == [16, 32, 64]


@pytest.mark.train
def test_patch_14_is_read_at_reduction_16():
    """DINOv2's 14-pixel patches: each 16x16 cell of the padded input becomes one patch."""
    enc = Encoder("vit_small_patch14_dinov2")
    assert enc.patch_size == 14 and enc.reductions == [4, 8, 16, 32]
    feats = enc(torch.randn(1, 3, *SIZE)).features
    assert [tuple(f.shape[-2:]) for f in feats] == ceil_sizes(SIZE, enc.reductions)


@pytest.mark.train
@pytest.mark.parametrize("arch,upsample", [("fcn8s", "transposed"), ("unet", "bilinear"),
                                           ("deconvnet", "bilinear"), ("segnet", "fade"),
                                           ("pspnet", "bilinear")])
def test_every_architecture_on_a_vit_at_an_odd_size(arch, upsample):
    args = {k: v for k, v in ARCHS[arch].items() if k != "decoder_channels"}
    if arch == "unet":
        args["decoder_channels"] = (32, 16, 8, 8)   # four levels: /4 .. /32
    model = zoo.create(arch, encoder="test_vit", upsample=upsample, num_classes=5, **args)
    logits, aux = model(torch.randn(2, 3, *SIZE), aux=True)
    assert logits.shape == (2, 5, *SIZE) and (aux is None) == (arch != "pspnet")
    (logits.logsumexp(1).mean() + (aux.mean() if aux is not None else 0)).backward()
    assert model.encoder.body.vit.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert model.encoder.body.vit.patch_embed.proj.weight.grad is not None


def test_unpool_refuses_a_vit_and_guided_unpool_says_what_it_reads():
    with pytest.raises(ValueError, match=r"'test_vit' is a plain ViT.*no max-pool.*'guided_unpool'"):
        zoo.create("deconvnet", encoder="test_vit", num_classes=5)   # the paper's unpool
    model = zoo.create("segnet", encoder="test_vit", upsample="guided_unpool", num_classes=5)
    reads = [row["reads"] for row in model.upsampling()]
    assert reads == ["switches: 2x2 maxima of encoder feature at /16",
                     "switches: 2x2 maxima of encoder feature at /8",
                     "switches: 2x2 maxima of encoder feature at /4",
                     "switches: 2x2 maxima of the input image"]
    assert model(torch.randn(1, 3, *SIZE)).shape == (1, 5, *SIZE)


def test_vit_blocks_reach_the_encoder_and_the_config():
    model = zoo.create("unet", encoder="test_vit", num_classes=3, decoder_channels=(16, 8, 8, 8),
                       vit_blocks=(2, 3, 4, 5))
    assert model.encoder.body.blocks == [2, 3, 4, 5]
    again = zoo.create(**model.config)
    assert again.encoder.body.blocks == [2, 3, 4, 5]


@pytest.mark.slow  # ~8 s on a busy 2-core machine: a 28 M-parameter encoder
def test_swin_at_a_size_not_a_multiple_of_its_window_or_patch():
    model = zoo.create("unet", encoder="swin_tiny_patch4_window7_224", upsample="bilinear",
                       num_classes=5, decoder_channels=(32, 16, 8, 8))
    assert model.encoder.patch_size == 4 and model.encoder.reductions == [4, 8, 16, 32]
    x = torch.randn(1, 3, 97, 131)                      # 97 = 4 * 24 + 1; windows of 7 * 4 px
    feats = model.encoder(x).features
    assert [tuple(f.shape[-2:]) for f in feats] == ceil_sizes((97, 131), [4, 8, 16, 32])
    assert model(x).shape == (1, 5, 97, 131)


def test_local_weights_load_into_the_vit(tmp_path):
    import timm
    from safetensors.torch import save_file
    full = timm.create_model("test_vit")
    path = tmp_path / "vit.safetensors"
    save_file(full.state_dict(), str(path))
    vit = Encoder("test_vit", weights=str(path)).body.vit
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(value, full.state_dict()[key])
    assert not torch.equal(Encoder("test_vit").body.vit.blocks[0].attn.qkv.weight,
                           vit.blocks[0].attn.qkv.weight)
