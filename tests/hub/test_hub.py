"""Zoo weights end to end: publish a briefly trained run, serve it over HTTP on
127.0.0.1, load it by URL (verified, cached, resumed), refuse what must be
refused, and keep MODEL_CARD.md in agreement with the registry."""
import contextlib
import hashlib
import http.server
import io
import json
import re
import runpy
import shutil
import threading
from pathlib import Path

import pytest
import torch

import zoo
from tests.tiny_run import MODEL, make_run, predict
from zoo.hub import load as hub
from zoo.lab import publish

REPO = Path(__file__).resolve().parents[2]
NAME = "unet_tiny_synthetic"


def _predict(model):
    return predict(model)


def _pin(published):
    """What zoo.load(sha256=) pins for a published folder: its config.json."""
    return hub.sha256_of(published[0] / "config.json")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder trained for 3 SGD steps: best -> iteration 2, last -> iteration 3."""
    run_dir = tmp_path_factory.mktemp("runs") / "unet_tiny"
    outputs = make_run(run_dir)
    assert not torch.equal(outputs[2], outputs[3])
    return run_dir, outputs


@pytest.fixture(scope="module")
def published(run, tmp_path_factory):
    """The run published through tools/publish.py; returns (folder, entry, printed text)."""
    out = tmp_path_factory.mktemp("dist") / NAME
    main = runpy.run_path(str(REPO / "tools" / "publish.py"), run_name="publish_cli")["main"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([str(run[0]), "--name", NAME, "--out", str(out)])
    entry = publish.publish(run[0], NAME, out)  # the same folder again: the entry it describes
    return out, entry, printed.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Static files with `Range: bytes=N-`; `cuts[path]` lists byte counts after which
    the next responses for `path` hang up; `ignore_range` answers 200 to everything."""

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cuts = srv.cuts.get(self.path)
        self.wfile.write(body[:cuts.pop(0)] if cuts else body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def _server(published, tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    shutil.copytree(published[0], www / "models" / NAME)
    tampered = www / "tampered" / NAME
    shutil.copytree(published[0], tampered)
    data = bytearray((tampered / hub.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the tensor data: still a valid safetensors file
    (tampered / hub.WEIGHTS).write_bytes(bytes(data))
    relabelled = www / "relabelled" / NAME  # same weights, other classes: only a pin on config.json sees it
    shutil.copytree(published[0], relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    (relabelled / "config.json").write_text(json.dumps({**config, "classes": ["a", "b", "c"]}))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.log, srv.cuts, srv.ignore_range = www, [], {}, False
    srv.url = lambda p: f"http://127.0.0.1:{srv.server_port}/{p}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(_server):
    _server.log.clear()
    _server.cuts.clear()
    _server.ignore_range = False
    return _server


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("ZOO_INDEX", raising=False)


PACKAGED = [e["name"] for e in json.loads(
    (Path(zoo.__file__).parent / "weights" / "index.json").read_text())["entries"]]


def _write_index(tmp_path, monkeypatch, *entries):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": list(entries)}))
    monkeypatch.setenv("ZOO_INDEX", str(index))
    return index


def _weights_requests(server):
    return [rng for path, rng in server.log if path.endswith(hub.WEIGHTS)]


# ---------------------------------------------------------------- publishing and local loads

def test_publish_writes_a_self_contained_folder(published, run):
    out, entry, printed = published
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    digest = hashlib.sha256((out / hub.WEIGHTS).read_bytes()).hexdigest()
    pin = hashlib.sha256((out / "config.json").read_bytes()).hexdigest()
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == hub.PUBLISHED_FORMAT and config["name"] == NAME
    assert config["model"] == {**MODEL, "encoder_weights": None}
    assert config["classes"] == ["sky", "road", "car"] and len(config["palette"]) == 3
    assert config["source"] == {"run": "unet_tiny", "checkpoint": "iter_000002", "iteration": 2}
    assert config["metrics"]["mIoU"] == pytest.approx(0.2) and config["eval_protocol"]["mode"] == "whole"
    assert config["recipe"]["train"] == {"iters": 3, "lr": 0.1}
    assert config["weights_sha256"] == digest
    assert len(printed.strip().splitlines()) == 2 and f'sha256="{pin}"' in printed  # a summary, not the entry
    assert config["recipe"]["data"]["root"] == "<data.root>"  # no local absolute path is published
    assert str(run[0].parent) not in (out / "config.json").read_text()
    assert entry.sha256 == digest and entry.arch == "unet" and entry.url == out.resolve().as_uri()


def test_publish_refuses_an_architecture_name(run, tmp_path):
    with pytest.raises(ValueError, match="'unet' is an architecture's name"):
        publish.publish(run[0], "unet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_publishing_what_would_not_load_leaves_the_folder_as_it_was(published, run, tmp_path):
    out = tmp_path / NAME
    shutil.copytree(published[0], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    bad = tmp_path / "run"
    shutil.copytree(run[0], bad)
    meta = bad / "checkpoints" / "iter_000003" / "meta.json"  # other weights than the folder's
    info = json.loads(meta.read_text())
    info["model"]["decoder_channels"] = [8, 8, 8, 8, 8]  # not the shapes the weights have
    meta.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="do not fit"):
        publish.publish(bad, NAME, out, pointer="last")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_load_run_folder_best_falls_back_to_last(run, tmp_path, monkeypatch):
    run_dir, outputs = run
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # encoder_weights="imagenet" in meta.json must not be fetched
    model = zoo.load(run_dir)
    assert not model.training and model.meta["iteration"] == 2 and model.meta["classes"][0] == "sky"
    assert torch.equal(_predict(model), outputs[2])
    assert torch.equal(_predict(zoo.load(run_dir, pointer="last")), outputs[3])
    no_best = tmp_path / "run"
    shutil.copytree(run_dir, no_best)
    (no_best / "checkpoints" / "best.json").unlink()
    assert zoo.load(no_best).meta["iteration"] == 3


def test_load_published_folder_path_and_file_url(published, run):
    out = published[0]
    for source in (out, out.as_uri(), out / hub.WEIGHTS):
        model = zoo.load(source)
        assert torch.equal(_predict(model), run[1][2])
        assert model.meta["name"] == NAME and model.meta["sha256"] == _pin(published)
        assert torch.equal(_predict(zoo.load(source, sha256=_pin(published))), run[1][2])
    with pytest.raises(hub.ChecksumError, match=f"sha256 mismatch for {re.escape(str(out / 'config.json'))}"):
        zoo.load(out, sha256=published[1].sha256)  # the weights' digest does not pin the folder


def test_local_folder_checked_against_its_digest(published, tmp_path):
    bad = tmp_path / NAME
    shutil.copytree(published[0], bad)
    data = bytearray((bad / hub.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (bad / hub.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(hub.ChecksumError, match=f"expected {published[1].sha256}"):
        zoo.load(bad)
    # nor does a fine-tune start from it unchecked
    with pytest.raises(hub.ChecksumError, match=f"expected {published[1].sha256}"):
        zoo.create(init_from=str(bad), **{k: v for k, v in MODEL.items() if k != "encoder_weights"})
    assert (bad / hub.WEIGHTS).is_file()  # a user's own file is never deleted


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(classes=["a", "b", "c", "d"]), r"key 'model.num_classes' is 3 but 'classes' names 4"),
    (lambda c: c.update(palette=[[0, 0, 0]]), r"key 'palette' has 1 colours for 3 classes"),
    (lambda c: c["model"].update(bogus=1), r"unet: unknown argument"),
])
def test_a_published_folders_config_is_checked_and_named(published, tmp_path, change, message):
    bad = tmp_path / NAME
    shutil.copytree(published[0], bad)
    config = json.loads((bad / "config.json").read_text())
    change(config)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad / 'config.json'))}: {message}"):
        zoo.load(bad)


def test_pickle_refused(tmp_path, server, run):
    pth = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, pth)
    for source in (pth, tmp_path, server.url("models/model.pt")):
        with pytest.raises(ValueError, match=r"(?s)pickle checkpoints are refused.*weights_only=True.*save_file"):
            zoo.load(source)
    assert server.log == []


# ---------------------------------------------------------------- downloads

def test_url_load_verified_then_cached(published, run, server, monkeypatch):
    url, sha = server.url(f"models/{NAME}"), _pin(published)
    model = zoo.load(url, sha256=sha)
    assert torch.equal(_predict(model), run[1][2]) and model.meta["source"] == url
    assert [p for p, _ in server.log] == [f"/models/{NAME}/config.json", f"/models/{NAME}/model.safetensors"]
    server.log.clear()
    assert torch.equal(_predict(zoo.load(url, sha256=sha)), run[1][2])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert torch.equal(_predict(zoo.load(url, sha256=sha)), run[1][2])
    assert server.log == []  # the second and third loads came from the cache


def test_url_load_without_sha256_fetches_config_again(published, run, server):
    url = server.url(f"models/{NAME}")
    model = zoo.load(url)
    assert torch.equal(_predict(model), run[1][2]) and model.meta["sha256"] == _pin(published)
    server.log.clear()
    zoo.load(url)  # a folder published anew at the URL would be seen; the weights come from the cache
    assert [p for p, _ in server.log] == [f"/models/{NAME}/config.json"]


@pytest.mark.parametrize("server_ranges", [True, False])
def test_interrupted_download_resumes(published, run, server, server_ranges):
    size = (published[0] / hub.WEIGHTS).stat().st_size
    server.cuts[f"/models/{NAME}/model.safetensors"] = [size // 2]
    server.ignore_range = not server_ranges  # a server that answers 200: start over
    model = zoo.load(server.url(f"models/{NAME}"), sha256=_pin(published))
    assert torch.equal(_predict(model), run[1][2])
    assert _weights_requests(server) == [None, f"bytes={size // 2}-"]


def test_download_gives_up_then_resumes_on_the_next_call(published, server):
    url, sha = server.url(f"models/{NAME}"), _pin(published)
    server.cuts[f"/models/{NAME}/model.safetensors"] = [1000, 2000, 3000]
    with pytest.raises(hub.DownloadError, match="interrupted 3 times.*run again to resume"):
        zoo.load(url, sha256=sha)
    assert _weights_requests(server) == [None, "bytes=1000-", "bytes=3000-"]
    server.log.clear()
    zoo.load(url, sha256=sha)
    assert _weights_requests(server) == ["bytes=6000-"]


def test_tampered_file_refused_and_removed(published, server):
    url, sha = server.url(f"tampered/{NAME}"), published[1].sha256
    for kwargs in ({"sha256": _pin(published)}, {}):  # pinned, or through config.json's weights_sha256
        with pytest.raises(hub.ChecksumError, match=f"sha256 mismatch for {url}/model.safetensors: "
                                                    f"expected {sha}, got [0-9a-f]{{64}}; the file was removed"):
            zoo.load(url, **kwargs)
    left = {p.name for p in hub.cache_dir().rglob("*")}
    assert not left & {"model.safetensors", "model.safetensors.part"}


def test_pinned_config_refuses_a_changed_one(published, run, server):
    url = server.url(f"relabelled/{NAME}")
    assert zoo.load(url).meta["classes"] == ["a", "b", "c"]  # unpinned: the weights still match
    with pytest.raises(hub.ChecksumError, match=f"sha256 mismatch for {url}/config.json: expected {_pin(published)}"):
        zoo.load(url, sha256=_pin(published))


def test_offline_with_an_empty_cache_names_the_missing_file(published, server, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    url = server.url(f"models/{NAME}")
    with pytest.raises(hub.OfflineError, match=r"ZOO_OFFLINE=1 and \S+/config.json is not in the cache; "
                                               r"it would be downloaded from " + re.escape(f"{url}/config.json")):
        zoo.load(url, sha256=_pin(published))
    assert server.log == []


# ---------------------------------------------------------------- entries

def test_entry_from_index(published, run, server, tmp_path, monkeypatch):
    entry = {**published[1].to_dict(), "url": server.url(f"models/{NAME}")}
    _write_index(tmp_path, monkeypatch, entry)
    with_weights = sorted([*PACKAGED, NAME])  # the index adds to the package's own entries
    assert zoo.list_models(pretrained=True) == with_weights and NAME in zoo.list_models("unet*")
    model = zoo.create(NAME, pretrained=True)
    assert torch.equal(_predict(model), run[1][2])
    assert model.meta["classes"] == ["sky", "road", "car"] and model.meta["metrics"]["mIoU"] == pytest.approx(0.2)
    assert zoo.create(NAME, pretrained=True, num_classes=3).meta["name"] == NAME  # same value: fine
    assert len(_weights_requests(server)) == 1 and torch.equal(_predict(zoo.load(NAME)), run[1][2])
    assert torch.equal(_predict(zoo.load(NAME, sha256=published[1].sha256)), run[1][2])
    with pytest.raises(hub.ChecksumError, match=f"entry {NAME}: its weights' sha256 is {published[1].sha256}, "
                                                f"not the pinned {'0' * 64}"):
        zoo.load(NAME, sha256="0" * 64)
    fresh = zoo.create(NAME)  # the architecture, fresh weights
    assert fresh.state_dict().keys() == model.state_dict().keys() and not hasattr(fresh, "meta")
    assert not torch.equal(_predict(fresh), run[1][2])
    assert _predict(zoo.create(NAME, num_classes=5)).shape[1] == 5
    with pytest.raises(ValueError, match="encoder_weights has no effect with pretrained=True"):
        zoo.create(NAME, pretrained=True, encoder_weights="imagenet")
    message = f"no zoo entry with trained weights named 'unet'; entries with weights: {', '.join(with_weights)}"
    with pytest.raises(ValueError, match=message):
        zoo.create("unet", pretrained=True)
    with pytest.raises(ValueError, match=f"did you mean {NAME}"):
        zoo.create("unet_tiny_synthtic", pretrained=True)


def test_entry_offline_names_the_weights(published, server, tmp_path, monkeypatch):
    _write_index(tmp_path, monkeypatch, {**published[1].to_dict(), "url": server.url(f"models/{NAME}")})
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(hub.OfflineError, match=rf"entries/{NAME}/model.safetensors is not in the cache"):
        zoo.create(NAME, pretrained=True)


@pytest.mark.parametrize("change, message", [
    ({"sha256": None}, r"entries\[0\] \('unet_tiny_synthetic'\): missing key 'sha256'"),
    ({"shaa256": "x"}, r"entries\[0\] \('unet_tiny_synthetic'\): unknown key 'shaa256' \(valid: name,"),
    ({"sha256": "abc"}, r"entries\[0\] \('unet_tiny_synthetic'\): .*sha256 must be 64 lowercase hex digits"),
    ({"model": {"name": "unett"}}, r"entries\[0\] \('unet_tiny_synthetic'\): model name 'unett' is not a "
                                   r"registered architecture; did you mean unet"),
])
def test_index_errors_name_the_file_and_key(published, tmp_path, monkeypatch, change, message):
    entry = {k: v for k, v in {**published[1].to_dict(), **change}.items() if v is not None}
    index = _write_index(tmp_path, monkeypatch, entry)
    with pytest.raises(ValueError, match=re.escape(f"ZOO_INDEX={index}: ") + message):
        zoo.list_models(pretrained=True)


def test_register_entry_refuses_duplicates(published, tmp_path, monkeypatch):
    entry = hub.Entry.from_dict({**published[1].to_dict(), "name": "unet_tiny_code"})
    hub.register_entry(entry)
    try:
        assert zoo.list_models("unet_tiny_*", pretrained=True) == ["unet_tiny_code"]
        with pytest.raises(ValueError, match="'unet_tiny_code' is already registered"):
            hub.register_entry(entry)
        _write_index(tmp_path, monkeypatch, entry.to_dict())
        with pytest.raises(ValueError, match="entry 'unet_tiny_code' is already registered in code"):
            zoo.list_models()
    finally:
        hub.ENTRIES._code.pop("unet_tiny_code")


def test_a_published_folder_by_url_carries_its_recipe(published, run, server):
    """Tools read the training recipe from config.json however the folder was reached."""
    from zoo.engine.sources import load_source
    by_path = load_source(published[0])
    by_url = load_source(server.url(f"models/{NAME}"))
    assert by_url.recipe is not None and by_url.run_dir is None
    assert by_url.recipe.model_dump() == by_path.recipe.model_dump()
    assert by_url.recipe.train.iters == 3


def test_load_of_a_mistyped_entry_name_offers_the_close_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^unet_resnet10t_camvd: no such file or folder, nor an "
                                                r"entry's name; did you mean unet_resnet10t_camvid, "):
        zoo.load("unet_resnet10t_camvd")
    with pytest.raises(FileNotFoundError, match=r"nor an entry's name \(zoo.list_models"):
        zoo.load("runs/unet_resnet10t_camvd")  # a path is not offered entry names
