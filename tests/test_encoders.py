"""The timm wrapper: channels, reductions, dilation, switches, weights."""
import pytest
import torch
from safetensors.torch import save_file

from zoo.encoders import Encoder


@pytest.mark.parametrize("name,os_,reductions", [
    ("test_resnet", 32, [2, 4, 8, 16, 32]),
    ("test_resnet", 8, [2, 4, 8, 8, 8]),
    ("test_efficientnet", 16, [2, 4, 8, 16, 16]),
    ("test_convnext", 32, [4, 8, 16, 32]),
])
def test_reductions_match_feature_sizes(name, os_, reductions):
    enc = Encoder(name, output_stride=os_)
    assert enc.reductions == reductions
    feats, switches = enc(torch.randn(1, 3, 64, 64))
    assert switches == {}
    assert [f.shape[1] for f in feats] == enc.channels
    assert [64 // f.shape[-1] for f in feats] == reductions


def test_resnet_stem_switches():
    enc = Encoder("test_resnet", capture_switches=True)
    assert enc.switch_channels == {2: 32}
    x = torch.randn(1, 3, 50, 66)
    feats, switches = enc(x)
    idx = switches[2]
    assert idx.shape == feats[1].shape[:1] + (32,) + feats[1].shape[-2:]
    assert idx.max() < 25 * 33  # indices address the /2 plane


def test_local_weights_file_loads(tmp_path):
    import timm
    full = timm.create_model("test_resnet")
    path = tmp_path / "w.safetensors"
    save_file(full.state_dict(), str(path))
    enc = Encoder("test_resnet", weights=str(path))
    ours = enc.body.state_dict()
    shared = [k for k in ours if k in full.state_dict()]
    assert len(shared) == len(ours) > 10
    for k in shared:
        torch.testing.assert_close(ours[k], full.state_dict()[k])
    assert not torch.equal(Encoder("test_resnet").body.state_dict()[shared[0]], ours[shared[0]])


def test_pickle_weights_refused(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not even a pickle")
    with pytest.raises(ValueError, match="pickle checkpoints are refused"):
        Encoder("test_resnet", weights=str(path))


def test_missing_weights_file():
    with pytest.raises(ValueError, match="neither 'imagenet', None nor an existing"):
        Encoder("test_resnet", weights="/nope/w.safetensors")


def test_imagenet_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="needs a download and ZOO_OFFLINE=1"):
        Encoder("test_resnet", weights="imagenet")
