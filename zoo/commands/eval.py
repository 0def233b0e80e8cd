"""Evaluate a trained model, by default with the protocol stored with its weights.

    segzoo eval runs/unet_ps
    segzoo eval runs/unet_ps --split val --mode slide --crop-size 360 480
    segzoo eval runs/pspnet_voc --scales 0.75 1.0 1.25 --flip
    segzoo eval dist/unet_resnet10t_camvid --data-root /data/camvid   # a published folder
    segzoo eval runs/unet_ps --calibration runs/unet_ps/calibration.json   # see segzoo calibrate
    segzoo eval fcn8s_resnet10t_camvid --backend onnxruntime --precision int8   # the deployed model

The model is a run folder, a published folder (its config.json carries the
recipe) or a zoo entry's name; the dataset is the recipe's. A run folder keeps
the result as eval-<split>-<mode>.json (what `segzoo publish --eval` ships);
other scales, flip, windows, --max-images or --calibration add a suffix
(eval-val-whole-s0.5_0.75-flip.json, eval-val-whole-calibrated.json), so trying them
never overwrites it; --backend onnxruntime adds -onnxruntime-<precision>.
"""
import argparse
import json
import sys


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder, published folder (or its URL) or zoo entry name")
    p.add_argument("--split", default=None, help="dataset split (default: the recipe's val split)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--mode", choices=["whole", "slide"], default=None)
    p.add_argument("--crop-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--scales", type=float, nargs="+", default=None)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored frame, or not (--no-flip); default: the stored protocol's")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--data-root", default=None, help="dataset folder (default: the recipe's data.root)")
    p.add_argument("--device", default="auto")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="a calibration.json from `segzoo calibrate`: add its logit_bias to the logits "
                        "(the result file gets a -calibrated suffix)")
    from zoo.commands.predict import add_backend_options
    add_backend_options(p)
    args = p.parse_args(argv)

    from zoo.commands.errors import run
    from zoo.inference.score import evaluate_run
    result = run(evaluate_run, args.model, split=args.split, pointer=args.checkpoint,
                 device=args.device, mode=args.mode, crop_size=args.crop_size, stride=args.stride,
                 scales=args.scales, flip=args.flip, max_images=args.max_images,
                 data_root=args.data_root, calibration=args.calibration, backend=args.backend,
                 precision=args.precision, threads=args.threads)
    headline = {k: round(result[k], 4) for k in ("mIoU", "pixel_acc", "mean_acc", "boundary_iou",
                                                  "trimap_miou")}
    print(json.dumps({**headline, "protocol": result["protocol"],
                      "boundary_params": result["boundary_params"],
                      "per_class_iou": result["per_class_iou"],
                      "per_class_boundary_iou": result["per_class_boundary_iou"]}, indent=1))
    print(summary(result), file=sys.stderr)  # the last line on a terminal; stdout stays JSON for scripts


def summary(result: dict) -> str:
    """The line that ends the output: the headline numbers and where they were kept."""
    from zoo.engine.logging import boundary_text
    where = f"written to {result['written']}" if result.get("written") else "not written (not a run folder)"
    return (f"{result['split']}: mIoU {result['mIoU']:.4f}  pixel acc {result['pixel_acc']:.4f}"
            f"{boundary_text(result)}; {where}")


if __name__ == "__main__":
    main()
