"""List registered models with parameters and GFLOPs at an input size.

    segzoo list                      # names only
    segzoo list "unet*" --cost --size 512 512 --num-classes 19
"""
import argparse


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
    from zoo.profile import summarize
    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    if not args.cost:
        print("\n".join(names))
        return
    print(f"{'model':28s} {'params (M)':>10s} {'GFLOPs @ %dx%d' % tuple(args.size):>16s}")
    for name in names:
        row = summarize(name, tuple(args.size), num_classes=args.num_classes, upsample=args.upsample)
        print(f"{name:28s} {row['params_m']:10.2f} {row['gflops']:16.2f}")


if __name__ == "__main__":
    main()
