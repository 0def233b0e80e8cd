"""A run folder as tools/train.py leaves it, from a tiny U-Net trained for three SGD
steps: checkpoints (best -> iteration 2, last -> iteration 3), recipe.yaml with a local
data root, eval.json, and pictures. Shared by the publishing and shipping tests."""
import copy
import json

import numpy as np
import torch
import torch.nn.functional as F
import yaml

import zoo
from zoo.hub.formats import save_checkpoint, set_pointer

MODEL = {"name": "unet", "encoder": "test_resnet", "num_classes": 3,
         "decoder_channels": [16, 16, 8, 8, 8], "encoder_weights": "imagenet"}
CLASSES = ["sky", "road", "car"]
X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def predict(model):
    with torch.no_grad():
        return model.eval()(X)


def make_run(run_dir, data_root="/data/synthetic"):
    """Returns {iteration: the model's output on X} for the three checkpoints."""
    from PIL import Image
    torch.manual_seed(0)
    model = zoo.create(**{**MODEL, "encoder_weights": None})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    protocol = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False}
    meta = {"model": MODEL, "classes": CLASSES, "palette": [[0, 0, 255], [128, 64, 128], [255, 0, 0]],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dataset": "synthetic",
            "eval_protocol": protocol}
    ckpts, outputs = run_dir / "checkpoints", {}
    for it in (1, 2, 3):
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        metrics = {"mIoU": 0.1 * it, "pixel_acc": 0.5 + 0.1 * it, "mean_acc": 0.3,
                   "per_class_iou": {"sky": 0.1 * it, "road": 0.2, "car": None}}
        ckpt = save_checkpoint(ckpts, f"iter_{it:06d}", model_state=model.state_dict(),
                               meta={**meta, "iteration": it, "metrics": metrics})
        set_pointer(ckpts, "last", ckpt, iteration=it)
        if it == 2:
            set_pointer(ckpts, "best", ckpt, iteration=it, mIoU=0.2)
        outputs[it] = predict(copy.deepcopy(model))
    recipe = {"model": MODEL, "data": {"dataset": "synthetic", "root": data_root},
              "train": {"iters": 3, "lr": 0.1}}
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run_dir / "eval.json").write_text(json.dumps({"mIoU": 0.3, "checkpoint": str(ckpts / "iter_000003")}))
    pictures = run_dir / "pictures"
    pictures.mkdir()
    for name in ("confusion.png", "00_frame_a.png", "01_frame_b.png", "02_frame_c.png"):
        Image.fromarray(np.full((4, 4, 3), len(name), np.uint8)).save(pictures / name)
    return outputs
