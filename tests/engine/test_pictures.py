"""Pictures a person reads at a glance: titled run pictures with a class legend and
enlarged small frames; ablation figures on honest axes with readable labels."""
from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from zoo.engine.visualize import MIN_PANEL_WIDTH, enlarge, overlay_panel, run_picture
from zoo.lab.ablate import plots

PALETTE = np.array([[200, 0, 0], [0, 160, 0], [0, 0, 220], [240, 200, 0]], np.uint8)
CLASSES = ["road", "tree", "sky", "pole"]


def _frame(h=24, w=32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    truth = np.zeros((h, w), np.uint8)
    truth[:, w // 2:] = 1
    truth[0, 0] = 255
    pred = truth.copy()
    pred[: h // 2] = 2
    pred[0, 0] = 1
    return image, truth, pred


def test_small_frames_are_enlarged_masks_by_nearest():
    image, truth, pred = _frame()
    big_image, big_truth, big_pred = enlarge(image, truth, pred)
    factor = -(-MIN_PANEL_WIDTH // 32)
    assert big_image.shape == (24 * factor, 32 * factor, 3) and big_truth.shape == (24 * factor, 32 * factor)
    np.testing.assert_array_equal(big_truth[::factor, ::factor], truth)  # each block one label
    np.testing.assert_array_equal(big_pred.reshape(24, factor, 32, factor).min((1, 3)),
                                  big_pred.reshape(24, factor, 32, factor).max((1, 3)))
    assert set(np.unique(big_pred)) == set(np.unique(pred))  # no new values between classes
    wide = np.zeros((4, MIN_PANEL_WIDTH, 3), np.uint8)
    assert enlarge(wide, wide[..., 0], wide[..., 0])[0] is wide  # large enough: untouched


def test_run_picture_has_titles_panels_and_a_legend_of_the_classes_shown():
    image, truth, pred = _frame()
    picture = run_picture(image, truth, pred, PALETTE, CLASSES)
    big = enlarge(image, truth, pred)
    panels = overlay_panel(*big, PALETTE)
    top = next(y for y in range(picture.shape[0]) if np.array_equal(picture[y:y + panels.shape[0]], panels))
    assert picture.shape[1] == panels.shape[1] and top > 10
    title_strip, legend = picture[:top], picture[top + panels.shape[0]:]
    step = big[0].shape[1] + 4
    for i in range(3):  # a title over each panel
        assert (title_strip[:, i * step:(i + 1) * step - 4].min(-1) < 100).any()
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    for c in (0, 1, 2):  # in the ground truth or the prediction
        assert tuple(PALETTE[c]) in colours
    assert tuple(PALETTE[3]) not in colours  # "pole" appears in neither


def _groups(seeds, spread=(0.805, 0.853)):
    rng = np.random.default_rng(1)
    groups = []
    for a, arch in enumerate(["fcn8s", "unet"]):
        for u, up in enumerate(["transposed", "bilinear"]):
            mean = spread[0] + (spread[1] - spread[0]) * (2 * a + u) / 3
            runs = [NS(miou=mean + rng.normal(0, 0.003), checkerboard=10.0 ** -(1 + 2 * u + a))
                    for _ in range(seeds)]
            groups.append(NS(family=arch, upsample=up, name=f"{arch}-{up}", runs=runs,
                             miou=float(np.mean([r.miou for r in runs])), latency_ms=4.0 + 3 * a + u))
    return groups


@pytest.fixture
def kept(monkeypatch):
    """The figure each plot function makes, instead of its PNG."""
    figures = []
    monkeypatch.setattr(plots, "save_small", lambda fig, path: figures.append(fig) or path)
    yield figures
    plots._plt().close("all")


def test_miou_axis_follows_the_data_with_seed_error_bars(kept, tmp_path):
    groups = _groups(seeds=3)
    plots.dots(groups, tmp_path / "m.png", metric="miou", ylabel="val mIoU", title="t")
    ax = kept[0].axes[0]
    lo, hi = ax.get_ylim()
    values = [r.miou for g in groups for r in g.runs]
    assert min(values) - 0.02 < lo < min(values) and max(values) < hi < max(values) + 0.02
    assert len(ax.containers) == 4 and all(c.has_yerr for c in ax.containers)  # mean ± std per configuration
    assert not any("seed noise" in t.get_text() for t in ax.texts)


def test_one_seed_says_differences_within_noise_are_not_findings(kept, tmp_path):
    plots.dots(_groups(seeds=1), tmp_path / "m.png", metric="miou", ylabel="val mIoU", title="t")
    notes = [" ".join(t.get_text().split()) for t in kept[0].axes[0].texts]
    assert notes == ["one seed per configuration: no error bars, and differences within seed noise "
                     "are not findings"]


def test_checkerboard_bars_are_linear_from_zero_and_labelled(kept, tmp_path):
    groups = _groups(seeds=2)
    plots.bars(groups, tmp_path / "c.png", metric="checkerboard", ylabel="score", title="t")
    ax = kept[0].axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    labels = sorted(float(t.get_text()) for t in ax.texts)
    assert labels == sorted(float(f"{g.runs[0].checkerboard:.1g}") for g in groups)


def test_pareto_labels_point_inward(kept, tmp_path):
    groups = _groups(seeds=1)
    plots.pareto(groups, [0, 1, 2, 3], tmp_path / "p.png")
    ax = kept[0].axes[0]
    align = {t.get_text(): t.get_horizontalalignment() for t in ax.texts}
    assert align["fcn8s-transposed"] == "left" and align["unet-bilinear"] == "right"


def test_prediction_grid_has_a_class_legend(kept, tmp_path):
    image, truth, pred = _frame()
    plots.qualitative([("bilinear", [pred])], [image], [truth], PALETTE, [3], tmp_path / "q.png",
                      title="unet", classes=CLASSES)
    legend = kept[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == CLASSES + ["not labelled"]
