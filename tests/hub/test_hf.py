"""Hugging Face Hub both ways against a fake Hub on 127.0.0.1 (tests/fake_hub.py):
push a run with tools/publish.py --push-to-hub, load it back with zoo.load /
zoo.create("hf-hub:..."), pinned (config.json and weights together) or not, at a
revision, offline from huggingface_hub's cache; tampered files are refused."""
import contextlib
import hashlib
import io
import json
import re
import runpy
from pathlib import Path

import pytest
import torch

import zoo
from tests.fake_hub import FakeHub
from tests.tiny_run import CLASSES, MODEL, make_run, predict
from zoo.hub import hf
from zoo.hub import load as hub
from zoo.lab import publish

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "segzoo-test/unet_tiny_camvid"


@pytest.fixture(scope="module")
def fake_hub():
    server = FakeHub()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _env(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    for name in ("HF_HUB_OFFLINE", "ZOO_OFFLINE", "ZOO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    fake_hub.log.clear()


@pytest.fixture(scope="module")
def pushed(fake_hub, tmp_path_factory):
    """A tiny run pushed through tools/publish.py; returns (run outputs, commit, digest, printed)."""
    run_dir = tmp_path_factory.mktemp("runs") / "unet_tiny"
    outputs = make_run(run_dir, data_root=str(run_dir.parent / "camvid"))
    main = runpy.run_path(str(REPO / "tools" / "publish.py"), run_name="publish_cli")["main"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("HF_ENDPOINT", fake_hub.endpoint)
        mp.setenv("HF_TOKEN", "hf_not_a_real_token")
        main([str(run_dir), "--push-to-hub", REPO_ID])
    m = re.fullmatch(rf'pushed {REPO_ID} at commit ([0-9a-f]{{40}})\n'
                     rf'load it with zoo.load\("hf-hub:{REPO_ID}@\1", sha256="([0-9a-f]{{64}})"\)\n',
                     printed.getvalue())
    assert m, printed.getvalue()
    return outputs, m[1], m[2], run_dir


@pytest.mark.train
def test_push_writes_config_weights_and_card(pushed, fake_hub):
    outputs, commit, digest, run_dir = pushed
    files = fake_hub.files(REPO_ID, commit)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads(files["config.json"])
    assert config["format"] == hub.PUBLISHED_FORMAT and config["classes"] == CLASSES
    assert config["model"]["encoder_weights"] is None and config["recipe"]["data"]["root"] == "<data.root>"
    assert digest == hashlib.sha256(files["config.json"]).hexdigest()  # the pin is config.json's,
    assert config["weights_sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()  # which pins these
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: segzoo\n")
    assert f'zoo.load("hf-hub:{REPO_ID}", sha256="{digest}")' in card
    assert "| 0.200 | 0.700 | 0.300 |" in card and "| sky | 0.200 |" in card and "| car | — |" in card
    assert str(run_dir.parent) not in card and str(run_dir.parent) not in files["config.json"].decode()


@pytest.mark.train
def test_load_pinned_revision_and_digest(pushed, fake_hub):
    outputs, commit, digest, _ = pushed
    model = zoo.load(f"hf-hub:{REPO_ID}@{commit}", sha256=digest)
    assert not model.training and torch.equal(predict(model), outputs[2])
    assert model.meta["classes"] == CLASSES and model.meta["sha256"] == digest
    resolves = [p for m, p in fake_hub.log if "/resolve/" in p]
    assert {p.rsplit("/", 1)[1] for p in resolves} == {"config.json", "model.safetensors"}
    assert all(f"/resolve/{commit}/" in p for p in resolves)


@pytest.mark.train
def test_create_from_hub(pushed, fake_hub):
    outputs, commit, digest, _ = pushed
    model = zoo.create(f"hf-hub:{REPO_ID}", pretrained=True)
    assert torch.equal(predict(model), outputs[2]) and model.meta["sha256"] == digest
    fresh = zoo.create(f"hf-hub:{REPO_ID}")  # as timm: the architecture, weights only when pretrained
    assert not hasattr(fresh, "meta") and fresh.config["encoder"] == "test_resnet"
    with pytest.warns(UserWarning, match="head.classifier.weight .3, 8, 3, 3. -> .5, 8, 3, 3."):
        five = zoo.create(f"hf-hub:{REPO_ID}", pretrained=True, num_classes=5)
    assert predict(five).shape[1] == 5


@pytest.mark.train
def test_offline_reads_the_cache_only(pushed, fake_hub, monkeypatch):
    outputs, commit, digest, _ = pushed
    source = f"hf-hub:{REPO_ID}@{commit}"
    for var in ("HF_HUB_OFFLINE", "ZOO_OFFLINE"):
        monkeypatch.setenv(var, "1")
        with pytest.raises(hub.OfflineError, match=f"offline mode and {re.escape(source)} config.json is not "
                                                   "in the Hugging Face cache"):
            zoo.load(source, sha256=digest)
        monkeypatch.delenv(var)
    assert fake_hub.log == []
    zoo.load(source, sha256=digest)
    fake_hub.log.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(predict(zoo.load(source, sha256=digest)), outputs[2])
    assert fake_hub.log == []


@pytest.mark.train
def test_tampered_file_refused(pushed, fake_hub, tmp_path):
    outputs, commit, digest, _ = pushed
    tampered = "segzoo-test/tampered"
    fake_hub.repos[tampered] = {"commits": {}, "main": None}
    sha = fake_hub.commit(tampered, dict(fake_hub.files(REPO_ID, commit)))
    fake_hub.tamper(tampered, "model.safetensors")
    weights_sha = json.loads(fake_hub.files(REPO_ID, commit)["config.json"])["weights_sha256"]
    for kwargs in ({"sha256": digest}, {}):  # pinned, or through config.json's weights_sha256
        fake_hub.log.clear()
        with pytest.raises(hub.ChecksumError, match=rf"sha256 mismatch for hf-hub:{tampered}@{sha} model.safetensors: "
                                                    rf"expected {weights_sha}, got [0-9a-f]{{64}}"):
            zoo.load(f"hf-hub:{tampered}@{sha}", **kwargs)
        weights_gets = [p for m, p in fake_hub.log if m == "GET" and p.endswith("model.safetensors")]
        assert len(weights_gets) == (2 if kwargs else 1)  # downloaded once more before refusing (fresh: once)
    relabelled = "segzoo-test/relabelled"
    fake_hub.repos[relabelled] = {"commits": {}, "main": None}
    config = json.loads(fake_hub.files(REPO_ID, commit)["config.json"])
    sha = fake_hub.commit(relabelled, {**fake_hub.files(REPO_ID, commit),
                                       "config.json": json.dumps({**config, "classes": ["a", "b", "c"]}).encode()})
    with pytest.raises(hub.ChecksumError, match=rf"sha256 mismatch for hf-hub:{relabelled}@{sha} config.json: "
                                                rf"expected {digest}"):
        zoo.load(f"hf-hub:{relabelled}@{sha}", sha256=digest)


@pytest.mark.train
def test_damaged_cache_heals(pushed, fake_hub):
    outputs, commit, digest, _ = pushed
    source = f"hf-hub:{REPO_ID}@{commit}"
    weights, _, _ = hf.download(source, sha256=digest)
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert torch.equal(predict(zoo.load(source, sha256=digest)), outputs[2])


@pytest.mark.train
def test_entry_hosted_on_the_hub(pushed, tmp_path, monkeypatch):
    outputs, commit, digest, _ = pushed
    weights, model_kwargs, meta = hf.download(f"hf-hub:{REPO_ID}@{commit}")
    entry = {"name": "unet_tiny_hf", "model": model_kwargs, "url": f"hf-hub:{REPO_ID}@{commit}",
             "sha256": hub.sha256_of(weights), "classes": CLASSES}
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": [entry]}))
    monkeypatch.setenv("ZOO_INDEX", str(index))
    assert torch.equal(predict(zoo.create("unet_tiny_hf", pretrained=True)), outputs[2])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"entries": [{**entry, "name": "unet_tiny_bad", "sha256": "0" * 64}]}))
    monkeypatch.setenv("ZOO_INDEX", str(bad))
    with pytest.raises(hub.ChecksumError, match=f"hf-hub:{REPO_ID}@{commit} \\(entry 'unet_tiny_bad'\\) "
                                                "model.safetensors: expected 0{64}"):
        zoo.create("unet_tiny_bad", pretrained=True)


@pytest.mark.parametrize("source, message", [
    ("hf-hub:nobody/nothing", "hf-hub:nobody/nothing: config.json: "),
    ("hf-hub:justaname", "expected hf-hub:<org>/<repo>"),
])
def test_bad_sources_are_one_line_errors(source, message):
    with pytest.raises((hub.DownloadError, ValueError), match=re.escape(message)):
        zoo.load(source)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_download_says_what_the_hub_answered(fake_hub, status):
    fake_hub.refused["someone/private"] = status
    try:
        with pytest.raises(hub.DownloadError, match=rf"^hf-hub:someone/private: config.json: .*{status}"):
            zoo.load("hf-hub:someone/private")
    finally:
        del fake_hub.refused["someone/private"]


@pytest.mark.train
def test_push_an_entry(pushed, fake_hub, tmp_path, monkeypatch):
    outputs, _, _, run_dir = pushed
    weights = run_dir / "checkpoints" / "iter_000002" / "model.safetensors"
    entry = {"name": "unet_tiny_entry", "model": {**MODEL, "encoder_weights": None},
             "url": str(weights), "sha256": hub.sha256_of(weights), "classes": CLASSES,
             "metrics": {"mIoU": 0.25, "per_class_iou": {"sky": 0.5}}}
    index = tmp_path / "entries.json"
    index.write_text(json.dumps({"entries": [entry]}))
    monkeypatch.setenv("ZOO_INDEX", str(index))
    commit, digest = publish.push_to_hub("unet_tiny_entry", "segzoo-test/from_entry")
    config = json.loads(fake_hub.files("segzoo-test/from_entry", commit)["config.json"])
    assert config["source"] == {"entry": "unet_tiny_entry", "sha256": entry["sha256"]}
    assert config["metrics"]["mIoU"] == 0.25
    model = zoo.load(f"hf-hub:segzoo-test/from_entry@{commit}", sha256=digest)
    assert torch.equal(predict(model), outputs[2])
