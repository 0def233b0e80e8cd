"""Train a segmentation model from a recipe.

    python tools/train.py recipes/quickstart.yaml                       # -> runs/quickstart
    python tools/train.py recipes/pspnet_voc.yaml data.root=/data/VOCdevkit/VOC2012 train.iters=40000
    python tools/train.py recipes/unet_camvid.yaml model.upsample=pixelshuffle --name unet_ps
    python tools/train.py recipes/unet_camvid.yaml --print-recipe       # every key and its value
    torchrun --nproc_per_node=4 tools/train.py recipes/pspnet_cityscapes.yaml

Overrides are key.path=value with YAML values (null, 3, 1e-3, [512, 512]).
The run folder is runs/<recipe> (runs/<recipe>-<digest of the overrides> with
overrides), runs/<--name> or --run-dir: running the same command again resumes
from its last checkpoint; --fresh starts over (the earlier run is moved aside).
"""
import argparse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None, help="run folder (default: runs/<recipe>[-<overrides digest>])")
    where.add_argument("--name", default=None, help="run folder runs/<name>")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true",
                     help="require a checkpoint to continue from; without --run-dir or --name, the "
                          "newest runs/<recipe>* folder that holds one")
    how.add_argument("--fresh", action="store_true",
                     help="start at iteration 0 even where the folder holds a run (it is moved aside)")
    p.add_argument("--print-recipe", action="store_true",
                   help="print the resolved recipe (overrides applied) as YAML and exit")
    args = p.parse_intermixed_args(argv)  # overrides may come after --run-dir

    from zoo.cli import run
    if args.print_recipe:
        from zoo.recipe import format_recipe
        print(run(format_recipe, args.recipe, args.overrides), end="")
        return
    from zoo.engine.trainer import train_from_files
    run(train_from_files, args.recipe, args.overrides, run_dir=args.run_dir, resume=args.resume,
        name=args.name, fresh=args.fresh)


if __name__ == "__main__":
    main()
