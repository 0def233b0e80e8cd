"""Train a segmentation model from a recipe.

    segzoo train quickstart                                    # a packaged recipe -> runs/quickstart
    segzoo train pspnet_voc data.root=/data/VOCdevkit/VOC2012 train.iters=40000
    segzoo train recipes/unet_camvid.yaml model.upsample=pixelshuffle --name unet_ps
    segzoo train unet_camvid --print-recipe                    # every key and its value
    segzoo train --list                                        # the packaged recipes
    torchrun --nproc_per_node=4 -m zoo.commands.train pspnet_cityscapes

(`python tools/train.py recipes/quickstart.yaml` in a checkout does the same.)
The recipe is a YAML file, or the name of one shipped with the package.
Overrides are key.path=value with YAML values (null, 3, 1e-3, [512, 512]).
The run folder is runs/<recipe> (runs/<recipe>-<digest of the overrides> with
overrides), runs/<--name> or --run-dir: running the same command again resumes
from its last checkpoint; --fresh starts over (the earlier run is moved aside).
"""
import argparse


def parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="recipe YAML file or packaged recipe name")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    p.add_argument("--list", action="store_true", help="list the packaged recipes and exit")
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
    return p


def list_recipes(width: int = 100) -> str:
    """One line per packaged recipe: its name and the first sentence of its header comment."""
    import re
    import textwrap

    from zoo.engine.packaged import packaged_recipes
    rows = []
    for name, path in packaged_recipes().items():
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        sentence = re.split(r"(?<=\.)\s", " ".join(header), maxsplit=1)[0]
        rows.append((name, textwrap.shorten(sentence, width, placeholder=" ...") if sentence else ""))
    pad = max((len(n) for n, _ in rows), default=0)
    return "\n".join(f"{n:{pad}s}  {a}".rstrip() for n, a in rows)


def main(argv=None, prog=None):
    p = parser(prog)
    args = p.parse_intermixed_args(argv)  # overrides may come after --run-dir
    if args.list:
        print(list_recipes())
        return
    if args.recipe is None:
        p.error("the recipe (a YAML file or a packaged recipe's name) is required")

    from zoo.commands.errors import run
    if args.print_recipe:
        from zoo.engine.packaged import find_recipe
        from zoo.engine.recipe import format_recipe
        print(run(format_recipe, run(find_recipe, args.recipe), args.overrides), end="")
        return
    from zoo.engine.trainer import train_from_files
    run(train_from_files, args.recipe, args.overrides, run_dir=args.run_dir, resume=args.resume,
        name=args.name, fresh=args.fresh)


if __name__ == "__main__":
    main()
