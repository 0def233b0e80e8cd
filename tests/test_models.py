"""Every architecture x every upsampler x three timm families."""
import pytest
import torch

import zoo
from decoders.upsample import UPSAMPLERS

ARCHS = {  # small widths keep CPU tests fast; the structure is the real one
    "fcn32s": {"head_channels": 16},
    "fcn16s": {"head_channels": 16},
    "fcn8s": {"head_channels": 16},
    "unet": {"decoder_channels": (32, 24, 16, 8, 8)},
    "deconvnet": {"fc_channels": 32},
    "pspnet": {"head_channels": 16, "aux_channels": 8},
}
ENCODERS = ["test_resnet", "test_efficientnet", "test_convnext"]


def test_every_registered_architecture_is_covered():
    assert set(ARCHS) <= set(zoo.list_models())
    assert {"fcn32s", "fcn16s", "fcn8s", "unet", "deconvnet", "pspnet"} == set(ARCHS)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("upsample", list(UPSAMPLERS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_forward_backward_odd_size(arch, upsample, encoder):
    model = zoo.create(arch, encoder=encoder, upsample=upsample, num_classes=5, **ARCHS[arch])
    x = torch.randn(2, 3, 97, 131)
    logits, aux = model(x, aux=True)
    assert logits.shape == (2, 5, 97, 131)
    assert (aux is None) == (arch != "pspnet")
    loss = logits.logsumexp(1).mean() + (aux.logsumexp(1).mean() if aux is not None else 0)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"no gradient reaches {dead[:5]}"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x[:1]), model(x[:1]))


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (64, 65)])
def test_any_size_from_32(size):
    model = zoo.create("unet", encoder="test_resnet", upsample="unpool", num_classes=3).eval()
    assert model(torch.randn(1, 3, *size)).shape[-2:] == size


def test_deconvnet_default_is_vgg16_with_true_switches():
    model = zoo.create("deconvnet", num_classes=21, fc_channels=64)
    assert model.encoder.name == "vgg16_bn"
    assert model.encoder.switch_channels == {1: 64, 2: 128, 4: 256, 8: 512, 16: 512}
    assert [type(up).__name__ for up in model.head.ups] == ["UnpoolUpsample"] * 5
    assert model(torch.randn(1, 3, 65, 67)).shape == (1, 21, 65, 67)  # VGG floors odd sizes


def test_pspnet_is_dilated_by_default_with_aux():
    model = zoo.create("pspnet", encoder="test_resnet", num_classes=4, head_channels=16)
    assert model.encoder.reductions[-1] == 8
    assert model.aux_head is not None
    assert len(model.head.ppm.stages) == 4


def test_fcn_skip_scores_start_at_zero():
    model = zoo.create("fcn8s", encoder="test_resnet", num_classes=3, head_channels=8)
    assert len(model.head.skip_scores) == 2
    assert all(s.weight.abs().sum() == 0 for s in model.head.skip_scores)


def test_output_stride_16_unet():
    model = zoo.create("unet", encoder="test_resnet", output_stride=16, num_classes=3)
    assert model.encoder.reductions == [2, 4, 8, 16, 16]
    assert model(torch.randn(1, 3, 45, 50)).shape == (1, 3, 45, 50)


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
