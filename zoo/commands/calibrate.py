"""Undo the class prior of a model trained with class weights (train.class_weights).

    segzoo calibrate runs/unet_camvid                      # alphas 0..1 on the train split
    segzoo calibrate runs/unet_camvid --max-images 92 --alphas 0 0.5 0.75 1
    segzoo calibrate runs/unet_camvid --max-class-drop 0.02   # no class may lose more IoU than that
    segzoo eval runs/unet_camvid --calibration runs/unet_camvid/calibration.json
    segzoo publish runs/unet_camvid --ship NAME --eval runs/unet_camvid/eval-val-whole-calibrated.json

Weighted cross-entropy makes a model over-predict the classes it up-weights. This
adds -alpha * log(class weight) to the logits, scores each alpha's mIoU on the
split under the protocol stored with the weights, and writes the best to
<run>/calibration.json. The default split is the training split, so that the val
figures `segzoo eval --calibration` measures afterwards are a held-out check of
the choice; `--split val` shows val's own best beside it (calibration-val.json,
which never replaces the run's calibration). --max-class-drop D keeps only the alphas
under which no class loses more than D IoU against the uncalibrated model (alpha 0):
undoing the prior can sink a thin class (pole, sign) while mIoU rises. See
zoo/engine/calibrate.py.
"""
import argparse


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder or published folder with its recipe")
    p.add_argument("--split", default=None, help="split to choose alpha on (default: the recipe's train split)")
    p.add_argument("--max-images", type=int, default=None,
                   help="score this many images spread evenly over the split (default: all)")
    p.add_argument("--alphas", type=float, nargs="+", default=None, metavar="A",
                   help="strengths to try (default: 0 0.25 0.5 0.75 1)")
    p.add_argument("--max-class-drop", type=float, default=None, metavar="D",
                   help="rule out an alpha under which a class loses more than D IoU against alpha 0 "
                        "(default: no class guard)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--data-root", default=None, help="dataset folder (default: the recipe's data.root)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from zoo.commands.errors import run
    from zoo.engine.calibrate import ALPHAS, calibrate
    r = run(calibrate, args.model, split=args.split, max_images=args.max_images,
            alphas=args.alphas or ALPHAS, pointer=args.checkpoint, device=args.device,
            data_root=args.data_root, max_class_drop=args.max_class_drop)
    names = list(r["alphas"][0]["per_class_iou"])
    print(f"{r['split']} split, {r['images']} images; mIoU and per-class IoU for logits - alpha * log(w):")
    print("alpha   mIoU   " + " ".join(f"{n[:8]:>8s}" for n in names))
    for row in r["alphas"]:
        mark = " <" if row["alpha"] == r["alpha"] else (f"  ruled out: {row['ruled_out']}" if "ruled_out" in row
                                                          else "")
        print(f"{row['alpha']:5.2f}  {row['mIoU']:.4f}  "
              + " ".join(_iou(row["per_class_iou"][n]) for n in names) + mark)
    where = r.get("written")
    print(f"chosen alpha {r['alpha']:g}" + (f"; wrote {where}" if where else ""))
    if where and where.endswith("/calibration.json"):
        print(f"next: segzoo eval {args.model} --calibration {where}")


def _iou(v) -> str:
    return f"{'—':>8s}" if v is None else f"{v:8.3f}"


if __name__ == "__main__":
    main()
