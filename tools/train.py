"""Train a segmentation model from a recipe.

    python tools/train.py recipes/quickstart.yaml
    python tools/train.py recipes/pspnet_voc.yaml data.root=/data/VOCdevkit/VOC2012 train.iters=40000
    python tools/train.py recipes/unet_camvid.yaml model.upsample=pixelshuffle --run-dir runs/unet_ps
    torchrun --nproc_per_node=4 tools/train.py recipes/pspnet_cityscapes.yaml

Overrides are key.path=value with YAML values (null, 3, 1e-3, [512, 512]).
Running again into the same --run-dir resumes where it stopped.
"""
import argparse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir (or the newest runs/<recipe>-*)")
    args = p.parse_intermixed_args(argv)  # overrides may come after --run-dir

    from zoo.cli import run
    from zoo.engine.trainer import train_from_files
    run(train_from_files, args.recipe, args.overrides, run_dir=args.run_dir, resume=args.resume)


if __name__ == "__main__":
    main()
