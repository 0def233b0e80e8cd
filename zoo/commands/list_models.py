"""List registered models with parameters and GFLOPs at an input size.

    segzoo list                      # names only
    segzoo list "unet*" --cost --size 512 512 --num-classes 19
    segzoo list --pretrained         # trained entries: model, dataset, val mIoU, where the weights are
"""
import argparse
from pathlib import Path


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern (default: all)")
    p.add_argument("--cost", action="store_true", help="build each model and report params and GFLOPs")
    p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--upsample", default=None, help="override the decoder's upsampler")
    p.add_argument("--pretrained", action="store_true", help="only entries with trained weights")
    args = p.parse_args(argv)

    import zoo
    from zoo.models.profile import count_flops, count_params
    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    if args.pretrained and not args.cost:
        print(entry_table(names))
        return
    if not args.cost:
        print("\n".join(names))
        return
    print(f"{'model':28s} {'params (M)':>10s} {'GFLOPs @ %dx%d' % tuple(args.size):>16s}")
    changes = {k: v for k, v in (("num_classes", args.num_classes), ("upsample", args.upsample)) if v is not None}
    for name in names:  # zoo.create knows entries as well as architectures (their fresh weights do here)
        model = zoo.create(name, **changes)
        print(f"{name:28s} {count_params(model) / 1e6:10.2f} {count_flops(model, tuple(args.size)) / 1e9:16.2f}")


def entry_table(names: list[str]) -> str:
    """One line per trained entry: what it builds, on what it was trained, its val mIoU
    under its stored protocol, and whether its weights ship in the package."""
    from zoo.hub.entries import SHIPPED_INDEX, get_entry
    rows = [("entry", "model", "dataset", "classes", "val mIoU", "weights")]
    for name in names:
        e = get_entry(name)
        model = "/".join(str(e.model[k]) for k in ("name", "encoder", "upsample") if e.model.get(k))
        miou = e.metrics.get("mIoU")
        rows.append((name, model, e.dataset or "-", str(e.num_classes),
                     f"{miou:.3f}" if isinstance(miou, (int, float)) else "-",
                     "in the package" if Path(e.url).parent == SHIPPED_INDEX.parent else e.url))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


if __name__ == "__main__":
    main()
