"""Predict masks for images with a trained model, as its evaluation reads them
(the recipe's validation transforms and the stored protocol; masks at each
image's own size).

    segzoo predict runs/unet_ps photos/*.jpg --out preds/
    segzoo predict dist/unet_camvid photos/ --out preds/              # a published folder, a folder of images
    segzoo predict unet_resnet10t_camvid frame.png --out preds/       # a zoo entry (segzoo list --pretrained)
    segzoo predict fcn8s_resnet10t_camvid photos/ --out preds/ --backend onnxruntime --precision int8

Writes <stem>_mask.png (palette PNG: pixel values are class ids) and
<stem>_overlay.png (the prediction over the photo) for each image.

--backend onnxruntime runs the model exported to ONNX (once; the file is cached
beside the weights by their sha256) on the CPU; --precision int8 its static
int8 quantization, calibrated on frames of the model's training split.
"""
import argparse


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """--backend, --precision, --threads: shared with `segzoo eval`."""
    g = p.add_argument_group("deployment (zoo/inference/deploy.py)")
    g.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                   help="PyTorch eager, or ONNX Runtime on the CPU (exported once and cached)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: static quantization calibrated on the training split (onnxruntime only)")
    g.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads, or torch's "
                   "with --backend torch (default: torch's count)")


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder, published folder (or its URL) or zoo entry name")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="of a run folder")
    p.add_argument("--device", default="auto")
    add_backend_options(p)
    p.add_argument("--data-root", default=None,
                   help="dataset folder whose training split calibrates int8 (default: the recipe's data.root)")
    args = p.parse_args(argv)

    from zoo.commands.errors import run
    from zoo.inference.predict import predict_files
    paths = run(predict_files, args.model, args.images, args.out, pointer=args.checkpoint,
                device=args.device, backend=args.backend, precision=args.precision, threads=args.threads,
                data_root=args.data_root)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
