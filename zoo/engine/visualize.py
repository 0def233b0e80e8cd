"""Pictures a person looks at: prediction overlays in the dataset's palette
and a row-normalised confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.base import IGNORE_INDEX
from zoo.data.palettes import colorize


def overlay_panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette,
                  ignore_index: int = IGNORE_INDEX, alpha: float = 0.55) -> np.ndarray:
    """image | ground truth over image | prediction over image, side by side."""
    def blend(mask):
        colour = colorize(mask, palette, ignore_index).astype(np.float32)
        keep = (mask == ignore_index)[..., None]
        mixed = (1 - alpha) * image.astype(np.float32) + alpha * colour
        return np.where(keep, image, mixed).astype(np.uint8)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, blend(truth), gap, blend(pred)], axis=1)


def save_png(array: np.ndarray, path: Path) -> Path:
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def confusion_png(matrix, class_names, path: Path, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(matrix, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 1.0 + 0.45 * k), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion (row-normalised)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
