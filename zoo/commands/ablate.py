"""Run a decoder ablation grid and write its report.

    segzoo ablate ablation_quickstart --out reports/quick      # a packaged ablation file by name
    segzoo ablate recipes/ablation_camvid.yaml --out reports/camvid_upsamplers --devices cuda:0,cuda:1
    segzoo ablate recipes/ablation_camvid_cpu.yaml --out reports/camvid_cpu --report-only
    segzoo ablate recipes/ablation_camvid_paired_cpu.yaml --out reports/paired --only 'unet-*-s0'

Each cell trains into <out>/runs/<arch>-<encoder>-<upsampler>-s<seed>/ (an
ordinary run folder). Running the same command again skips finished cells and
resumes a killed one. Overrides (key.path=value, YAML values) apply to every
cell, e.g. --override train.iters=4; report.* ones to the report settings,
e.g. --override report.num_images=2 or --override report.reference=transposed.

The report (<out>/README.md, report.html) opens with "Which upsampler should I
use": each upsampler against report.reference (default bilinear), paired by
seed, with a 95% interval; <out>/summary.json holds those comparisons and
every cell's numbers.
"""
import argparse
import shlex
import sys


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ablation", help="ablation YAML file (base recipe + grid) or packaged name")
    p.add_argument("--out", required=True, help="report folder; runs go to <out>/runs/")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every cell's recipe, or report.* (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained side by side (default 1)")
    p.add_argument("--devices", default=None,
                   help="comma-separated devices handed out to the jobs, e.g. cuda:0,cuda:1")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="train only the cells whose names match (shell pattern, repeatable), "
                        "e.g. a pilot: --only 'unet-*-bilinear-s[01]'")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the run folders")
    p.add_argument("--measure-device", default="auto", help="device for latency and checkerboard")
    args = p.parse_args(argv)
    if args.report_only and (args.only or args.jobs != 1 or args.devices):  # they choose what trains
        p.error("--report-only trains nothing: drop --only, --jobs and --devices (the report covers "
                "every finished cell)")

    from zoo.commands.errors import run
    from zoo.engine.packaged import find_recipe
    from zoo.lab.ablate import ablate
    words = argv if argv is not None else sys.argv[1:]
    command = f"{prog or 'python tools/ablate.py'} " + " ".join(shlex.quote(a) for a in words)
    run(ablate, run(find_recipe, args.ablation), args.out, overrides=args.override, jobs=args.jobs,
        devices=args.devices.split(",") if args.devices else None, only=args.only, report_only=args.report_only,
        measure_device=args.measure_device, command=command)


if __name__ == "__main__":
    main()
