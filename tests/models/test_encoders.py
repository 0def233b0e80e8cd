"""The timm wrapper: channels, reductions, dilation, switches, weights."""
import pytest
import torch
from safetensors.torch import save_file

from zoo.models.encoders import Encoder


@pytest.mark.parametrize("name,os_,reductions", [
    ("test_resnet", 32, [2, 4, 8, 16, 32]),
    ("test_resnet", 8, [2, 4, 8, 8, 8]),
    ("test_efficientnet", 16, [2, 4, 8, 16, 16]),
    ("test_convnext", 32, [4, 8, 16, 32]),
])
def test_reductions_match_feature_sizes(name, os_, reductions):
    enc = Encoder(name, output_stride=os_)
    assert enc.reductions == reductions
    out = enc(torch.randn(1, 3, 64, 64))
    feats = out.features
    assert out.switches == {} and out.pooled == {}
    assert [f.shape[1] for f in feats] == enc.channels
    assert [64 // f.shape[-1] for f in feats] == reductions


def test_resnet_stem_switches():
    enc = Encoder("test_resnet", capture_switches=True)
    assert enc.switch_channels == {2: 32}
    assert enc.info.switch_sources == {2: "maxpool"}
    x = torch.randn(1, 3, 50, 66)
    out = enc(x)
    feats, idx = out.features, out.switches[2]
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


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_imagenet_offline_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("ZOO_OFFLINE", value)
    monkeypatch.setattr("zoo.models.encoders._cached_in_hub", lambda name: False)
    with pytest.raises(RuntimeError, match="needs a download and offline mode is set") as e:
        Encoder("test_resnet", weights="imagenet")
    assert "model.encoder_weights=null" in str(e.value)


def test_unreachable_hub_fails_fast_naming_the_override(monkeypatch):
    """No network: one line within seconds, not a minute of retries and a traceback."""
    import socket
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("zoo.models.encoders._cached_in_hub", lambda name: False)
    with pytest.raises(RuntimeError, match=rf"cannot be reached \(127.0.0.1:{port}: .*model.encoder_weights=null"):
        Encoder("test_resnet", weights="imagenet")


def test_cannot_dilate_names_the_reason():
    with pytest.raises(ValueError, match=r"cannot dilate to output_stride=8 \(\S.*\); use output_stride=32"):
        Encoder("vgg11_bn", output_stride=8)


def test_vgg_pool_switches_and_outputs_by_reduction():
    enc = Encoder("vgg11_bn", capture_switches=True, capture_pools=True)
    info = enc.info
    assert info.switch_channels == {1: 64, 2: 128, 4: 256, 8: 512, 16: 512}
    assert info.pool_channels == {2: 64, 4: 128, 8: 256, 16: 512, 32: 512}
    x = torch.randn(1, 3, 64, 96)
    out = enc(x)
    assert sorted(out.switches) == [1, 2, 4, 8, 16] and sorted(out.pooled) == [2, 4, 8, 16, 32]
    torch.testing.assert_close(out.pooled[32], out.features[-1])  # pool5 is timm's last feature
    # the switches address the pool's input plane: gathering there gives the pool output
    feat16 = out.features[4]
    gathered = feat16.flatten(2).gather(2, out.switches[16].flatten(2)).view_as(out.pooled[32])
    torch.testing.assert_close(gathered, out.pooled[32])


def test_same_padded_pools_give_switches_in_the_unpadded_plane():
    """timm's MaxPool2dSame pads with -inf and ignores return_indices; the
    wrapper still finds its switches, in the coordinates of the unpadded input."""
    from timm.layers.pool2d_same import MaxPool2dSame
    enc = Encoder("test_resnet", capture_switches=True)
    enc.body.maxpool = MaxPool2dSame(3, 2)
    enc.body.maxpool.register_forward_hook(enc._hook("maxpool"))
    x = torch.randn(1, 3, 45, 61)
    out = enc(x)
    stem = out.features[0]
    idx = out.switches[2]
    assert idx.min() >= 0 and idx.max() < stem.shape[-2] * stem.shape[-1]
    gathered = stem.flatten(2).gather(2, idx.flatten(2)).view_as(out.features[1][:, :32])
    torch.testing.assert_close(gathered, enc.body.maxpool(stem))


def test_captures_are_per_call_not_module_state():
    """Two threads through one encoder each get their own switches."""
    import threading
    enc = Encoder("test_resnet", capture_switches=True).eval()
    xs = [torch.randn(1, 3, 40, 40), torch.randn(1, 3, 56, 72)]
    results = [None, None]

    def run(i):
        for _ in range(5):
            with torch.no_grad():
                results[i] = enc(xs[i]).switches[2].shape

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(1, 32, 10, 10), (1, 32, 14, 18)]
    assert not any(isinstance(v, (list, dict)) and v
                   and torch.is_tensor(next(iter(v.values())) if isinstance(v, dict) else v[0])
                   for v in vars(enc).values())


@pytest.mark.slow  # builds three VGG-11s (~130 M parameters each): ~13 s
def test_vgg_fc6_fc7_load_from_the_same_weights(tmp_path):
    """With a VGG's weights, its classifier MLP (pre_logits fc1/fc2) becomes fc6/fc7."""
    import timm
    full = timm.create_model("vgg11_bn")
    path = tmp_path / "vgg.safetensors"
    save_file(full.state_dict(), str(path))
    enc = Encoder("vgg11_bn", weights=str(path))
    torch.testing.assert_close(enc.pretrained_fc["fc6.weight"], full.pre_logits.fc1.weight)
    torch.testing.assert_close(enc.pretrained_fc["fc7.bias"], full.pre_logits.fc2.bias)
    assert Encoder("vgg11_bn").pretrained_fc is None
