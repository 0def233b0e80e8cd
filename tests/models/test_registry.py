"""Registry behaviour: names, presets, errors that name the culprit."""
import pytest
from torch import nn

import zoo
from zoo.models.registry import MODELS, builder_params, register_model, register_preset


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
        register_model(MODELS.get("unet"))
    with pytest.raises(ValueError, match="already registered"):
        register_preset("unet_resnet34", MODELS.get("unet"))


def test_fcn_needs_skip_levels():
    # dilated to /8, convnext's deepest is /8; FCN-8s then needs /4 and /2, and it starts at /4
    with pytest.raises(ValueError, match="needs a feature at reduction 2.*reductions \\[4, 8, 8, 8\\]"):
        zoo.create("fcn8s", encoder="test_convnext", output_stride=8, fc_channels=8)


# ----------------------------------------------------------------------------- zoo.create (zoo/factory.py)

ENTRY = "unet_resnet10t_camvid"  # shipped with the package: weights on disk


def test_list_models_architectures_presets_and_entries():
    from zoo.models.registry import architectures
    assert set(architectures(presets=False)) == {"fcn32s", "fcn16s", "fcn8s", "unet", "deconvnet", "segnet",
                                                 "pspnet"}
    assert set(architectures()) > set(architectures(presets=False)) and ENTRY not in architectures()
    assert ENTRY in zoo.list_models() and zoo.list_models("unet_*", pretrained=True) == [ENTRY]


def test_pretrained_needs_an_entry():
    with pytest.raises(ValueError, match="no zoo entry with trained weights named 'unet'"):
        zoo.create("unet", pretrained=True)


def test_unknown_name_suggests_entries_too():
    with pytest.raises(ValueError, match=f"unknown model 'unet_resnet10t_camvd'; did you mean {ENTRY}"):
        zoo.create("unet_resnet10t_camvd")


def test_init_from_an_entry_and_the_old_spelling():
    arch = {k: v for k, v in zoo.hub.load.get_entry(ENTRY).model.items() if k != "logit_bias"}
    with pytest.warns(UserWarning, match="head.classifier"):  # 5 classes: the classifier stays fresh
        model = zoo.create(**{**arch, "num_classes": 5}, init_from=ENTRY)
    assert model.meta["initialised_from"] == ENTRY and model.meta["skipped"][0].startswith("head.classifier")
    with pytest.warns(DeprecationWarning, match=f"pass init_from='{ENTRY}' instead"):
        old = zoo.create(**arch, pretrained=ENTRY)
    assert old.meta == {"initialised_from": ENTRY, "skipped": []}
    entry = zoo.create(init_from=ENTRY)  # no name: the entry itself, with its weights
    assert entry.meta["classes"] == zoo.hub.load.get_entry(ENTRY).classes
    with pytest.raises(TypeError, match="not two sources"):
        zoo.create("unet", pretrained=ENTRY, init_from=ENTRY)


def test_recipe_pretrained_is_init_from(monkeypatch):
    from zoo.engine import trainer
    seen = {}
    monkeypatch.setattr(zoo.factory, "create", lambda **kwargs: seen.update(kwargs) or nn.Identity())
    recipe = type("R", (), {"model": {"name": ENTRY, "pretrained": ENTRY}})()
    trainer.build_model(recipe, type("D", (), {"classes": list("abc")})())
    assert seen == {"name": ENTRY, "init_from": ENTRY, "num_classes": 3}
