"""Predict masks for image files with a trained run.

    python tools/predict.py runs/unet_ps photos/*.jpg --out preds/

Writes <stem>_mask.png (palette PNG: pixel values are class ids) and
<stem>_overlay.png (the prediction over the photo) for each image.
"""
import argparse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from zoo.cli import run
    from zoo.engine.runs import predict_files
    paths = run(predict_files, args.run_dir, args.images, args.out, pointer=args.checkpoint,
                device=args.device)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
