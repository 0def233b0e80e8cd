"""Export a model to ONNX and torch.export with dynamic height and width, checking
parity with the eager model at two sizes (zoo/inference/export.py).

    segzoo export --model fcn8s_resnet10t_camvid --out exported/    # a zoo entry, at its eval size
    segzoo export --model unet --arg encoder=resnet18 --arg num_classes=19 --out exported/unet
    segzoo export --model runs/unet_camvid --out exported/unet_camvid    # a trained run
    segzoo export --all --encoder test_resnet --out /tmp/export_grid   # every arch x upsampler

A trained model's files carry its preprocessing (mean, std, validation transforms,
evaluation scale), classes and palette: in the ONNX file's metadata and in
<name>.json beside it (zoo/inference/deploy.py). A format that does not export with dynamic
height and width (PSPNet's adaptive pooling) is exported at the fixed --size
instead, and the output says so.
"""
import argparse
import functools
import json
from pathlib import Path


def parse(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="run folder, published folder, zoo entry name, or an architecture "
                                      "name built untrained with zoo.create(name, **args)")
    what.add_argument("--all", action="store_true", help="every architecture x upsampler, tiny heads")
    p.add_argument("--arg", action="append", default=[], metavar="K=V",
                   help="zoo.create argument, value read as YAML (repeatable)")
    p.add_argument("--encoder", default=None, help="encoder of the --all grid (default test_resnet), or of "
                                                   "an architecture named by --model (as --arg encoder=...)")
    p.add_argument("--out", default="exported")
    p.add_argument("--formats", nargs="+", default=["onnx", "torch_export"],
                   choices=["onnx", "torch_export"])
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="export (example input) size (default: a zoo entry's eval input size, else 64 64)")
    p.add_argument("--check-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="second parity size, must pass (default: size + (32, 64))")
    p.add_argument("--odd-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="probe size, reported as any_size (default: size + (33, 67))")
    p.add_argument("--static", action="store_true", help="fixed height and width")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance (max abs diff)")
    return p.parse_args(argv)


def export_one(args) -> dict:
    from zoo.engine.sources import load_source
    from zoo.inference.deploy import deploy_info, eval_input_size, stamp
    from zoo.inference.export import export_model
    from zoo.lab.bench import parse_model_args
    from zoo.models.registry import builder_params
    arch_args = {**({"encoder": args.encoder} if args.encoder else {}), **parse_model_args(args.arg)}
    src = load_source(args.model, allow_arch=True, arch_args=arch_args)
    model = src.model
    arch = model.config["name"]
    name = arch if args.model == arch else Path(args.model).name
    size = tuple(args.size or eval_input_size(args.model) or (64, 64))
    options = dict(check_size=args.check_size, odd_size=args.odd_size, atol=args.atol, name=name)
    reports = export_model(model, args.out, args.formats, size, dynamic=not args.static, **options)
    for fmt, report in reports.items():
        if not report["ok"] and not args.static:  # dynamic sizes failed: a fixed size may not
            fixed = export_model(model, args.out, [fmt], size, dynamic=False, **options)[fmt]
            if fixed["ok"]:
                fixed["attempts"] = report["attempts"] + fixed["attempts"]
                fixed["note"] = (f"exported at the fixed size {size[0]}x{size[1]} (as --static does): "
                                 f"dynamic height and width failed; --size H W exports another size")
                reports[fmt] = fixed
            else:
                report["reason"] += "; with --static: " + fixed["reason"]
    weights_sha = None
    if src.meta:  # trained weights: the file's own sha256 (a published folder's meta has config.json's)
        from zoo.inference.deploy import cache_place
        weights_sha = cache_place(src, args.model)[2]
    info = deploy_info(src.meta, src.recipe, model.config, sha256=weights_sha)
    onnx = reports.get("onnx")
    if onnx and onnx["ok"]:
        stamp(Path(onnx["path"]), {**info, "size": None if onnx["dynamic"] else list(size)})
    elif any(r["ok"] for r in reports.values()):
        Path(args.out, f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    default = getattr(builder_params(arch).get("upsample"), "default", "-")
    return {"arch": arch, "upsample": model.config.get("upsample", default), **reports}


def main(argv=None, prog=None):
    args = parse(argv, prog)
    from zoo.inference.export import export_grid, format_table
    if args.all:
        log = functools.partial(print, flush=True)
        from zoo.lab.bench import parse_model_args
        rows = export_grid(args.out, encoder=args.encoder or "test_resnet", formats=args.formats,
                           size=args.size or (64, 64), log=log, model_args=parse_model_args(args.arg),
                           dynamic=not args.static, check_size=args.check_size, odd_size=args.odd_size,
                           atol=args.atol)
    else:
        from zoo.commands.errors import run
        rows = [run(export_one, args)]
    print(format_table(rows, args.formats))
    failed = [f"{r['arch']}/{r['upsample']} {f}" for r in rows for f in args.formats if not r[f]["ok"]]
    if failed:
        print(f"\n{len(failed)} export(s) failed: {', '.join(failed)}")
    for r in rows:  # every failed try, including those a fallback recovered from
        for f in args.formats:
            for attempt in r[f]["attempts"]:
                print(f"  {r['arch']}/{r['upsample']} {f}: {attempt}")
            if r[f].get("note"):
                print(f"note: {r['arch']}/{r['upsample']} {f} {r[f]['note']}")
    return 1 if failed and not args.all else 0


if __name__ == "__main__":
    raise SystemExit(main())
