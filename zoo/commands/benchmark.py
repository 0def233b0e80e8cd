"""Training and inference throughput, peak memory, parameters and GFLOPs of zoo models,
optionally beside the matching segmentation_models_pytorch model (zoo/lab/bench.py).

    segzoo benchmark --arch unet --encoder resnet18 --upsample nearest \\
        --size 256 256 --batch 4 --threads 2 --against smp --json runs/bench.json
    segzoo benchmark --arch unet pspnet --upsample bilinear transposed   # a grid
    segzoo benchmark --upsamplers --arch unet --encoder resnet18 --size 360 480 --batch 2 \\
        --threads 1 --json runs/upsamplers.json   # every registered upsampler, ratios to bilinear
    segzoo benchmark --device cuda --recipe-defaults --against smp --smp-eager-fp32
    segzoo benchmark --learning --arch unet pspnet --data camvid \\
        --seeds 0 1 --learning-iters 500 --out runs/parity    # zoo vs smp, one sample stream
    segzoo benchmark --deploy all --data camvid --json runs/deploy.json
        # eager vs ONNX Runtime fp32 / int8 on the zoo's entries: latency, agreement, val mIoU
    segzoo benchmark --label-ceiling recipes/deconvnet_resnet10t_camvid.yaml \
        --set data.options.holdout=drives      # what a last-feature-only head can reach per stride
"""
import argparse


def parse(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=["unet"])
    p.add_argument("--encoder", nargs="+", default=["resnet18"])
    p.add_argument("--upsample", nargs="+", default=None, help="default: nearest; with --upsamplers: "
                   "every registered upsampler")
    p.add_argument("--upsamplers", action="store_true",
                   help="one row per upsampler: parameters, GFLOPs, training step, inference latency "
                        "and peak memory as ratios to bilinear, models taking turns "
                        "(zoo/lab/upsampler_cost.py); --iters is the number of turns")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--arg", action="append", default=[], metavar="K=V",
                   help="extra zoo.create argument, value read as YAML (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--recipe-defaults", action="store_true",
                   help="precision and layout as a recipe's 'auto' settings resolve on this device")
    p.add_argument("--aux-weight", type=float, default=0.0, help="train the auxiliary head too")
    p.add_argument("--iters", type=int, default=10, help="timed steps per model and mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="models take turns this many times")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--against", choices=["smp"], default=None)
    p.add_argument("--smp-eager-fp32", action="store_true",
                   help="time smp in eager fp32 whatever the zoo settings")
    p.add_argument("--json", default=None, metavar="PATH", help="write {'meta', 'rows'} here")
    c = p.add_argument_group("label ceiling (--label-ceiling RECIPE): zoo/lab/ceiling.py")
    c.add_argument("--label-ceiling", default=None, metavar="RECIPE",
                   help="mIoU of the recipe's validation labels pooled to each output stride's grid "
                        "and upsampled bilinearly: the ceiling of a head without skips")
    c.add_argument("--strides", type=int, nargs="+", default=[32, 16, 8, 4, 2])
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable), e.g. data.root=/data/camvid")
    g = p.add_argument_group("learning parity (--learning): zoo vs smp trained on one sample stream")
    g.add_argument("--learning", action="store_true",
                   help="train each --arch (unet, pspnet) beside its smp counterpart (zoo/lab/parity.py)")
    g.add_argument("--data", default=None, metavar="ROOT",
                   help="CamVid root (SegNet layout); default: the embedded synthetic scenes")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    g.add_argument("--learning-iters", type=int, default=500)
    g.add_argument("--learning-batch", type=int, default=8)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--frame", type=int, nargs=2, default=[180, 240], metavar=("H", "W"))
    g.add_argument("--crop", type=int, nargs=2, default=[176, 224], metavar=("H", "W"))
    g.add_argument("--out", default="runs/parity", help="JSON and loss-curve plot go here")
    g.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="merge reports of the same benchmark run with different seeds (one process "
                        "per seed) into one, written to --out")
    g.add_argument("--peer-from", default=None, metavar="JSON",
                   help="take the smp side from this earlier report (same settings and seeds) and "
                        "train only the zoo's: to measure a change to the zoo at half the cost")
    g.add_argument("--before", default=None, metavar="JSON",
                   help="an earlier report whose zoo curve the plot adds, dashed")
    d = p.add_argument_group("deployment (--deploy): PyTorch eager vs ONNX Runtime fp32 and int8 "
                             "(zoo/lab/deploy_bench.py); --data, --rounds and --json apply")
    d.add_argument("--deploy", nargs="+", default=None, metavar="ENTRY",
                   help="zoo entries to time and score at their eval size; 'all' for every one")
    d.add_argument("--deploy-threads", type=int, nargs="+", default=[1, 2], metavar="N")
    d.add_argument("--max-images", type=int, default=None, help="val frames scored (default: all)")
    d.add_argument("--timed-frames", type=int, default=10, help="val frames timed per round")
    args = p.parse_args(argv)
    mode = "--upsamplers" if args.upsamplers else "--deploy" if args.deploy else None
    if mode:  # a flag the mode would drop is refused, not ignored
        ignored = [f"--{k.replace('_', '-')}" for k in _NOT_TAKEN[mode] if getattr(args, k) != p.get_default(k)]
        if ignored:
            p.error(f"{mode} does not take {', '.join(ignored)}")
    return args


_TIMING = ("amp", "channels_last", "compile", "recipe_defaults", "aux_weight", "against", "smp_eager_fp32")
_NOT_TAKEN = {  # the settings of the throughput grid that each other mode has no use for
    "--upsamplers": (*_TIMING, "rounds"),  # fp32, contiguous, eager; models take turns --iters times
    "--deploy": (*_TIMING, "arch", "encoder", "upsample", "size", "batch", "num_classes", "arg", "device",
                 "iters", "warmup", "threads"),  # CPU, each entry at its eval size; --deploy-threads
}


def deploy(args):
    from zoo.commands.errors import run
    from zoo.lab.deploy_bench import run as run_deploy
    run(run_deploy, args.deploy, json_path=args.json, threads=tuple(args.deploy_threads),
        data_root=args.data, max_images=args.max_images, timed_frames=args.timed_frames,
        rounds=args.rounds, log=lambda line: print(line, flush=True))


def upsampler_cost(args):
    import json
    from pathlib import Path

    from zoo.lab.bench import parse_model_args
    from zoo.lab.upsampler_cost import format_table, measure
    for arch, encoder in [(a, e) for a in args.arch for e in args.encoder]:
        try:
            report = measure(arch, encoder, tuple(args.size), args.batch, upsamplers=args.upsample,
                             num_classes=args.num_classes, model_args=parse_model_args(args.arg),
                             device=args.device, iters=args.iters, warmup=args.warmup,
                             log=lambda line: print(line, flush=True))
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"{arch} / {encoder} at {args.size[0]}x{args.size[1]}, batch {args.batch}, "
              f"{report['meta']['threads']} thread(s); peak memory: {report['meta']['memory']}")
        print(format_table(report))
        if args.json:
            path = Path(args.json)
            if len(args.arch) * len(args.encoder) > 1:
                path = path.with_name(f"{path.stem}-{arch}-{encoder}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1) + "\n")
            print(f"wrote {path}")


def _report(path: str) -> dict:
    import json
    try:
        return json.loads(open(path).read())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read parity report {path}: {e}") from None


def learning(args):
    from zoo.lab.bench import parse_model_args
    from zoo.lab.parity import format_summary, run_parity, write
    before = _report(args.before) if args.before else None
    if args.combine:
        from zoo.lab.parity import combine
        report = combine([_report(path) for path in args.combine])
        print(format_summary(report))
        for path in write(report, args.out, before=before):
            print(f"wrote {path}")
        return
    peer = _report(args.peer_from) if args.peer_from else None
    zoo_args = parse_model_args(args.arg)
    for arch in args.arch:
        for encoder in args.encoder:
            try:
                report = run_parity(arch, encoder=encoder, root=args.data, seeds=tuple(args.seeds),
                                    iters=args.learning_iters, batch=args.learning_batch, lr=args.lr,
                                    frame=tuple(args.frame), crop=tuple(args.crop), device=args.device,
                                    zoo_args=zoo_args, peer=peer, peer_source=args.peer_from)
            except ValueError as e:
                raise SystemExit(f"error: {e}") from None
            print(format_summary(report))
            for path in write(report, args.out, before=before):
                print(f"wrote {path}")


def main(argv=None, prog=None):
    args = parse(argv, prog)
    import torch

    from zoo.lab.bench import grid, parse_model_args, run_grid
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.learning or args.combine:
        return learning(args)
    if args.upsamplers:
        return upsampler_cost(args)
    if args.deploy:
        return deploy(args)
    if args.label_ceiling:
        return label_ceiling(args)
    speed = {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile}
    if args.recipe_defaults:
        from types import SimpleNamespace

        from zoo.engine.runtime import resolve_speed
        cfg = SimpleNamespace(amp="auto", channels_last="auto", compile="auto")
        speed = resolve_speed(cfg, torch.device(args.device))
    specs = grid(args.arch, args.encoder, args.upsample or ["nearest"], parse_model_args(args.arg),
                 size=tuple(args.size), batch=args.batch, device=args.device,
                 num_classes=args.num_classes, aux_weight=args.aux_weight, **speed)
    run_grid(specs, json_path=args.json, against=args.against, iters=args.iters,
             warmup=args.warmup, rounds=args.rounds, smp_eager_fp32=args.smp_eager_fp32)


def label_ceiling(args):
    from zoo.engine.recipe import load_recipe
    from zoo.lab.ceiling import recipe_ceiling
    results, info = recipe_ceiling(load_recipe(args.label_ceiling, args.set), args.strides)
    print(f"{info['dataset']} {info['split']} ({info['images']} label maps), frames scaled by "
          f"{info['scale']:g}: each stride's grid of class fractions, upsampled bilinearly")
    names = list(next(iter(results.values()))["per_class_iou"])
    print("| output stride | mIoU | " + " | ".join(names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for stride, m in results.items():
        cells = ["—" if v is None else f"{v:.3f}" for v in m["per_class_iou"].values()]
        print(f"| {stride} | {m['mIoU']:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
