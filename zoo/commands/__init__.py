"""`segzoo`, the command line: one subcommand per tool.

    segzoo train quickstart                     # a packaged recipe by name, or a recipe file
    segzoo eval runs/quickstart
    segzoo list "unet*" --cost

Each subcommand is a module here with `main(argv, prog)`; `tools/<name>.py`
in a checkout call the same functions. A module is imported only when its
command runs, so `segzoo list` never loads the training stack.
Within a command module, too, the zoo's own imports sit inside its functions on purpose
(not at the top), so that `segzoo --help` and one-line errors stay fast.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module under zoo.commands, one-line summary for `segzoo --help`)
COMMANDS = {
    "train": ("train", "train a model from a recipe (a file or a packaged recipe's name)"),
    "eval": ("eval", "evaluate a run folder, published folder or zoo entry"),
    "calibrate": ("calibrate", "undo class-weighted training's prior: a logit bias chosen on the train split"),
    "predict": ("predict", "predict masks and overlays for image files"),
    "ablate": ("ablate", "train a decoder ablation grid and write its report"),
    "export": ("export", "export to ONNX and torch.export, checking parity"),
    "benchmark": ("benchmark", "throughput, memory and FLOPs, optionally beside smp"),
    "publish": ("publish", "publish a run as a self-contained folder; regenerate the model card"),
    "list": ("list_models", "list registered models, with parameters and GFLOPs"),
}


def usage() -> str:
    from zoo.common.version import __version__
    width = max(map(len, COMMANDS))
    lines = [f"usage: segzoo <command> [options]   (segzoo {__version__})", "", "commands:"]
    lines += [f"  {name:{width}s}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`segzoo <command> --help` describes a command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from zoo.common.version import __version__
        print(f"segzoo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from zoo.common.names import did_you_mean
        hint = did_you_mean(name, COMMANDS)
        print(f"error: unknown command {name!r}{f'; {hint}' if hint else ''} "
              f"(commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    return module.main(rest, prog=f"segzoo {name}") or 0
