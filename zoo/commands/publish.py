"""Publish a run as a self-contained folder, or regenerate MODEL_CARD.md's entries.

    segzoo publish runs/unet_camvid --name unet_resnet18_camvid --out dist/unet_resnet18_camvid \\
        --url https://host/models/unet_resnet18_camvid
    segzoo publish --card                 # MODEL_CARD.md's "## Zoo entries" from the registry

The folder holds config.json, model.safetensors and model.safetensors.sha256;
serve it anywhere and `zoo.load(URL, sha256=...)` loads it. The registry entry
to add is printed.
"""
import argparse


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="run folder (checkpoints/best.json, else last.json)")
    p.add_argument("--name", help="the entry's name, e.g. unet_resnet18_camvid")
    p.add_argument("--out", help="folder to write")
    p.add_argument("--url", default=None, help="where --out will be served (default: its file:// URL)")
    p.add_argument("--pointer", default="best", choices=["best", "last"])
    p.add_argument("--card", nargs="?", const="MODEL_CARD.md", metavar="PATH",
                   help="regenerate the card's entries section from the registry (default MODEL_CARD.md)")
    args = p.parse_args(argv)
    if args.card is None and not (args.run_dir and args.name and args.out):
        p.error("give RUN_DIR --name NAME --out DIR, or --card")

    from zoo import publish
    if args.card is not None:
        print(f"{args.card}: {'updated' if publish.update_card(args.card) else 'up to date'}")
        return
    print(publish.entry_snippet(publish.publish(args.run_dir, args.name, args.out,
                                                url=args.url, pointer=args.pointer)))


if __name__ == "__main__":
    main()
