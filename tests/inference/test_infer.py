"""Using a trained model: zoo.predict / Predictor read an image as evaluation
does, and every tool takes a run folder, a published folder or an architecture."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import zoo
from tests.conftest import tiny_unet_recipe
from zoo.inference.predict import Predictor, image_files, predict_files

# Frames of 40x56 that evaluation resizes to 32x48, as unet_camvid_cpu.yaml halves CamVid.
RECIPE = tiny_unet_recipe((40, 56), 4, data={
    "val_transforms": [{"name": "Resize", "params": {"height": 32, "width": 48}}]})


@pytest.fixture(scope="module")
def trained(train_tiny_run):
    return train_tiny_run(RECIPE, "infer")


@pytest.fixture(scope="module")
def published(trained, tmp_path_factory):
    from zoo.lab.publish import publish
    out = tmp_path_factory.mktemp("published") / "tiny_synthetic"
    publish(trained, "tiny_synthetic", out)
    return out


def _val(run_dir):
    from zoo.data import make_dataset
    from zoo.engine.recipe import load_recipe
    recipe = load_recipe(run_dir / "recipe.yaml")
    return make_dataset(recipe.data, recipe.data.val_split, train=False)


@pytest.mark.train
def test_predict_agrees_with_the_evaluation_path(trained):
    """The recipe's val transforms (the resize), the model, the scores resized back to the frame."""
    from zoo.engine.evaluate import predict_logits
    val = _val(trained)
    model = zoo.load(trained)
    predictor = Predictor(trained, device="cpu")
    naive_agreement = []
    for i in range(3):
        frame, _, _ = val.load(i)
        assert frame.shape[:2] == (40, 56) and tuple(val[i]["image"].shape[-2:]) == (32, 48)
        with torch.no_grad():
            scores = predict_logits(model, val[i]["image"][None], num_classes=len(val.classes))
            expected = F.interpolate(scores, size=(40, 56), mode="bilinear", align_corners=False).argmax(1)[0]
        out = predictor(frame)
        assert out.mask.shape == (40, 56)
        np.testing.assert_array_equal(out.mask, expected.numpy())
        # What predict did before: the frame at full size, no resize. It differs, so the test can fail.
        x = torch.from_numpy(((frame / 255.0 - val_mean()) / val_std()).astype(np.float32)).permute(2, 0, 1)
        with torch.no_grad():
            naive = model(x[None]).argmax(1)[0].numpy()
        naive_agreement.append((naive == out.mask).mean())
    assert min(naive_agreement) < 1.0


def val_mean():
    return np.array(RECIPE["data"].get("mean", [0.485, 0.456, 0.406]), np.float32)


def val_std():
    return np.array(RECIPE["data"].get("std", [0.229, 0.224, 0.225]), np.float32)


@pytest.mark.train
def test_predictor_inputs_and_outputs(trained, tmp_path):
    frame, _, _ = _val(trained).load(0)
    Image.fromarray(frame).save(tmp_path / "f.png")
    by_array = zoo.predict(trained, frame, device="cpu")
    for other in (tmp_path / "f.png", str(tmp_path / "f.png"), Image.fromarray(frame)):
        np.testing.assert_array_equal(zoo.predict(trained, other, device="cpu").mask, by_array.mask)
    k = len(by_array.classes)
    assert by_array.probabilities.shape == (k, 40, 56) and by_array.probabilities.dtype == np.float32
    np.testing.assert_allclose(by_array.probabilities.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(by_array.probabilities.argmax(0), by_array.mask)
    colours = by_array.palette[by_array.mask]
    np.testing.assert_array_equal(by_array.overlay, (0.5 * frame + 0.5 * colours).astype(np.uint8))
    with pytest.raises(ValueError, match=r"image array of dtype float64: expected uint8 RGB"):
        zoo.predict(trained, frame / 255.0, device="cpu")
    # A model object: its own meta (mean, std, palette), no recipe, so no resize.
    model = zoo.load(trained)
    bare = zoo.Predictor(model, device="cpu")(frame)
    assert bare.mask.shape == (40, 56) and bare.classes == by_array.classes


@pytest.mark.train
def test_predict_tool_takes_folders_and_published_folders(trained, published, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    val = _val(trained)
    for i in range(2):
        Image.fromarray(val.load(i)[0]).save(frames / f"{i}.png")
    (frames / "notes.txt").write_text("not an image")
    assert image_files([frames]) == [frames / "0.png", frames / "1.png"]
    written = predict_files(trained, [frames], tmp_path / "run_out", device="cpu")
    assert sorted(p.name for p in written) == ["0_mask.png", "0_overlay.png", "1_mask.png", "1_overlay.png"]
    predict_files(published, [frames / "1.png"], tmp_path / "pub_out", device="cpu")
    from_run = np.asarray(Image.open(tmp_path / "run_out" / "1_mask.png"))
    from_published = np.asarray(Image.open(tmp_path / "pub_out" / "1_mask.png"))
    np.testing.assert_array_equal(from_run, from_published)  # the published recipe's resize applies too
    np.testing.assert_array_equal(from_run, Predictor(trained, device="cpu")(val.load(1)[0]).mask)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"^{empty}: no image files \(.jpg"):
        image_files([empty])


@pytest.mark.train
def test_an_entry_name_predicts_and_evaluates_like_its_run(trained, tmp_path, monkeypatch, capsys):
    from zoo.inference.score import evaluate_run
    from zoo.lab.publish import publish
    entry = publish(trained, "tiny_entry", tmp_path / "tiny_entry")
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": [entry.to_dict()]}))
    monkeypatch.setenv("ZOO_INDEX", str(index))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "cache"))
    frame = _val(trained).load(2)[0]
    np.testing.assert_array_equal(zoo.predict("tiny_entry", frame, device="cpu").mask,
                                  zoo.predict(trained, frame, device="cpu").mask)  # the recipe's resize too
    by_entry = evaluate_run("tiny_entry", device="cpu", max_images=2)
    by_run = evaluate_run(trained, device="cpu", max_images=2)
    assert by_entry["confusion"] == by_run["confusion"]


@pytest.mark.train
def test_eval_tool_on_a_published_folder(trained, published, capsys):
    from tools.eval import main
    assert not (published / "recipe.yaml").exists()
    main([str(published), "--device", "cpu", "--max-images", "2"])
    from_published = json.loads(capsys.readouterr().out)
    main([str(trained), "--device", "cpu", "--max-images", "2"])
    from_run = json.loads(capsys.readouterr().out)
    assert from_published == from_run
    assert not list(published.glob("eval-*.json"))  # results go to run folders only
    cut = json.loads((trained / "eval-val-whole-first2.json").read_text())  # a cut never poses as the full result
    assert cut["images"] == 2 and cut["max_images"] == 2  # and publishing refuses it as val's figure
    assert not (trained / "eval-val-whole.json").exists()
    before = torch.get_num_threads()
    try:  # --no-flip overrides a stored flip; --threads sets eager's threads too
        main([str(trained), "--device", "cpu", "--max-images", "1", "--no-flip", "--threads", "1"])
        assert json.loads(capsys.readouterr().out)["protocol"]["flip"] is False and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):  # windows the whole mode would ignore, and record
        main([str(trained), "--device", "cpu", "--crop-size", "16", "16"])
    assert capsys.readouterr().err.strip() == (
        "error: --crop-size and --stride apply to --mode slide; the protocol's mode is whole, which would "
        "ignore them (add --mode slide)")


def test_a_photo_is_read_upright_from_a_path_or_a_pil_image(tmp_path):
    """A JPEG whose EXIF says 'rotate 90': the path is read upright (as the data sets read
    it), and so is the same file opened with PIL."""
    from zoo.inference.predict import as_rgb
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    assert as_rgb(tmp_path / "p.jpg").shape == as_rgb(Image.open(tmp_path / "p.jpg")).shape == (60, 40, 3)


def test_eval_file_name_keeps_the_stored_protocols_result_apart():
    from zoo.inference.score import eval_file_name
    stored = {"mode": "whole", "scales": [0.5], "flip": False}
    assert eval_file_name("val", dict(stored), stored) == "eval-val-whole.json"
    assert eval_file_name("val", {**stored, "scales": (0.5,)}, stored) == "eval-val-whole.json"
    assert eval_file_name("val", {**stored, "scales": [0.5, 0.75], "flip": True}, stored) \
        == "eval-val-whole-s0.5_0.75-flip.json"
    assert eval_file_name("test", dict(stored), stored, max_images=3) == "eval-test-whole-first3.json"
    slide = {"mode": "slide", "scales": [0.5], "flip": False, "crop_size": [180, 240], "stride": [120, 160]}
    assert eval_file_name("val", slide, stored) == "eval-val-slide-crop180x240-stride120x160.json"


@pytest.mark.train
def test_eval_tool_names_what_a_folder_without_recipe_lacks(trained, tmp_path, capsys):
    from zoo.commands.errors import run
    from zoo.inference.score import evaluate_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / "recipe.yaml").unlink()
    with pytest.raises(SystemExit):
        run(evaluate_run, run_dir, device="cpu")
    assert capsys.readouterr().err.strip() == (
        f"error: {run_dir}: evaluation needs the training recipe (a run folder's recipe.yaml, or "
        "'recipe' in a published folder's config.json), and this source has none")


@pytest.mark.train
def test_sources_for_export(trained):
    from zoo.engine.sources import load_source
    src = load_source(trained)
    assert src.run_dir == trained and src.recipe.data.val_transforms[0]["name"] == "Resize"
    assert src.model.meta["classes"] == list(_val(trained).classes)
    fresh = load_source("unet", allow_arch=True, arch_args={"encoder": "test_resnet", "num_classes": 3})
    assert fresh.model.config == {"name": "unet", "encoder": "test_resnet", "num_classes": 3}
    assert fresh.recipe is None and fresh.meta == {}
    with pytest.raises(ValueError, match=r"unknown model 'unte'; did you mean unet"):
        load_source("unte", allow_arch=True)
    with pytest.raises(ValueError, match=r"model arguments \(encoder\) apply to an architecture name only"):
        load_source(trained, allow_arch=True, arch_args={"encoder": "resnet18"})
    with pytest.raises(FileNotFoundError, match="no such file or folder, nor an entry's name"):
        load_source("unet")  # an architecture has no trained weights


@pytest.mark.slow  # ~10 s: torch.export
def test_export_tool_exports_a_trained_run(trained, tmp_path, capsys):
    from tools.export import main
    assert main(["--model", str(trained), "--formats", "torch_export", "--out", str(tmp_path / "x")]) == 0
    table = capsys.readouterr().out
    assert "| unet | bilinear | ok" in table  # (odd sizes may fail a guard: the table says why)
    assert list((tmp_path / "x").glob("*.pt2"))
    from zoo.hub.formats import resolve_run
    from zoo.hub.load import sha256_of
    info = json.loads(next((tmp_path / "x").glob("*.json")).read_text())
    assert info["weights_sha256"] == sha256_of(resolve_run(trained, "best") / "model.safetensors")
