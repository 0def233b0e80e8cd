"""Registry behaviour: names, presets, errors that name the culprit."""
import pytest

import zoo
from zoo.registry import builder_params, register_model, register_preset


def test_list_models_patterns():
    assert zoo.list_models("fcn*")[:3] == ["fcn16s", "fcn32s", "fcn8s"]
    assert "unet_resnet34" in zoo.list_models("unet_*")
    assert zoo.list_models("nothing*") == []


def test_preset_defaults_and_params():
    params = builder_params("unet_resnet34")
    assert params["encoder"].default == "resnet34"
    assert "decoder_channels" in params and "upsample" in params


def test_unknown_architecture_suggests():
    with pytest.raises(ValueError, match="unknown model 'psp_net'.*pspnet"):
        zoo.create("psp_net")


def test_unknown_encoder_suggests():
    with pytest.raises(ValueError, match="unknown encoder 'resnet5'.*resnet50"):
        zoo.create("unet", encoder="resnet5")


def test_unknown_upsampler_suggests():
    with pytest.raises(ValueError, match="unknown upsampler 'bilinar'.*bilinear"):
        zoo.create("unet", encoder="test_resnet", upsample="bilinar")


def test_unknown_keyword_lists_valid():
    with pytest.raises(ValueError, match="unknown argument.*dropuot.*valid:.*dropout"):
        zoo.create("pspnet", encoder="test_resnet", dropuot=0.2)


@pytest.mark.parametrize("encoder", ["vgg11_bn", "hrnet_w18_small"])
def test_non_dilatable_encoder_output_stride_8(encoder):
    with pytest.raises(ValueError, match=f"encoder '{encoder}' cannot dilate to output_stride=8.*resnet"):
        zoo.create("pspnet", encoder=encoder, output_stride=8)


def test_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        zoo.create("unet", encoder="test_resnet", output_stride=4)


def test_duplicates_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model(zoo.registry.resolve_name("unet"))
    with pytest.raises(ValueError, match="already registered"):
        register_preset("unet_resnet34", zoo.registry.resolve_name("unet"))


def test_fcn_needs_skip_levels():
    # dilated to /8, convnext's deepest is /8; FCN-8s then needs /4 and /2, and it starts at /4
    with pytest.raises(ValueError, match="needs a feature at reduction 2.*reductions \\[4, 8, 8, 8\\]"):
        zoo.create("fcn8s", encoder="test_convnext", output_stride=8, fc_channels=8)
