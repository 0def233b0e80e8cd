"""Pictures a person looks at: prediction overlays in the dataset's palette,
titled and with a legend of the classes shown, and a row-normalised confusion
matrix; `write_pictures` draws those of a finished run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data.base import IGNORE_INDEX
from zoo.data.palettes import colorize
from zoo.engine.evaluate import frame_scores


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


MIN_PANEL_WIDTH = 320  # smaller frames are enlarged by a whole factor so a person can read them
TITLES = ("image", "ground truth", "prediction")


def enlarge(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, min_width: int = MIN_PANEL_WIDTH):
    """Small frames enlarged by a whole factor: the photo smoothly, the masks with nearest
    neighbours so no colour appears that is not a class's."""
    factor = -(-min_width // image.shape[1])
    if factor <= 1:
        return image, truth, pred
    from PIL import Image
    h, w = image.shape[:2]
    big = np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.Resampling.BILINEAR))
    return big, *(np.repeat(np.repeat(m, factor, 0), factor, 1) for m in (truth, pred))


def run_picture(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette, classes,
                ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The three panels of `overlay_panel` under their titles, small frames enlarged, and a
    legend of the classes in the ground truth or the prediction, in their colours."""
    from PIL import Image, ImageDraw, ImageFont
    image, truth, pred = enlarge(image, truth, pred)
    panels = overlay_panel(image, truth, pred, palette, ignore_index)
    font = ImageFont.load_default(size=14)
    shown = [int(c) for c in np.union1d(np.unique(truth), np.unique(pred))
             if c != ignore_index and c < len(classes)]
    entries = [(tuple(int(v) for v in palette[c]), str(classes[c])) for c in shown]
    if (truth == ignore_index).any():
        entries.append(((255, 255, 255), "not labelled (left unpainted)"))
    width = panels.shape[1]
    rows = _legend_rows(entries, font, width)
    head, line = 22, 20
    canvas = Image.new("RGB", (width, head + panels.shape[0] + 6 + line * len(rows)), "white")
    canvas.paste(Image.fromarray(panels), (0, head))
    draw = ImageDraw.Draw(canvas)
    step = image.shape[1] + 4
    for i, title in enumerate(TITLES):
        draw.text((i * step + image.shape[1] / 2, head / 2), title, fill="black", font=font, anchor="mm")
    y = head + panels.shape[0] + 6
    for row in rows:
        x = 4
        for colour, name in row:
            draw.rectangle((x, y + 3, x + 13, y + 16), fill=colour, outline=(90, 90, 90))
            draw.text((x + 18, y + 10), name, fill="black", font=font, anchor="lm")
            x += 18 + _text_width(font, name) + 16
        y += line
    return np.asarray(canvas)


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _legend_rows(entries, font, width: int) -> list[list]:
    rows, row, used = [], [], 4
    for colour, name in entries:
        need = 18 + _text_width(font, name) + 16
        if row and used + need > width:
            rows.append(row)
            row, used = [], 4
        row.append((colour, name))
        used += need
    return rows + ([row] if row else [])


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


@torch.no_grad()
def write_pictures(model, dataset, out_dir: Path, result: dict, classes, device, num_images: int,
                   protocol: dict | None = None) -> list[Path]:
    """Prediction overlays for the first val images and the confusion matrix."""
    protocol = protocol or {}
    model.eval()
    paths = []
    for i in range(min(num_images, len(dataset))):
        image, mask, name = dataset.load(i)
        # load() gives the format's unlabelled value; the run may ignore another (make_dataset).
        mask = np.where(mask == type(dataset).ignore_index, dataset.ignore_index, mask)
        x = dataset[i]["image"][None].to(device)
        # As zoo.predict reads an image: the eval protocol, scores resized to the frame.
        pred = frame_scores(model, x, mask.shape, protocol, len(classes)).argmax(1)[0]
        pred = pred.cpu().numpy().astype(np.uint8)
        panel = run_picture(image, mask, pred, dataset.palette, classes, dataset.ignore_index)
        paths.append(save_png(panel, Path(out_dir) / f"{i:02d}_{name}.png"))
    if "confusion" in result:
        paths.append(confusion_png(result["confusion"], classes, Path(out_dir) / "confusion.png",
                                   title=f"val mIoU {result['mIoU']:.3f}"))
    return paths
