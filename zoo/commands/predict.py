"""Predict masks for images with a trained model, as its evaluation reads them
(the recipe's validation transforms and the stored protocol; masks at each
image's own size).

    segzoo predict runs/unet_ps photos/*.jpg --out preds/
    segzoo predict dist/unet_resnet18_camvid photos/ --out preds/     # a published folder, a folder of images
    segzoo predict unet_resnet18_camvid frame.png --out preds/        # a zoo entry

Writes <stem>_mask.png (palette PNG: pixel values are class ids) and
<stem>_overlay.png (the prediction over the photo) for each image.
"""
import argparse


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder, published folder (or its URL) or zoo entry name")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="of a run folder")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from zoo.commands.errors import run
    from zoo.infer import predict_files
    paths = run(predict_files, args.model, args.images, args.out, pointer=args.checkpoint,
                device=args.device)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
