"""Ship a run as a zoo entry, publish it as a folder or on the Hugging Face Hub, or
regenerate MODEL_CARD.md's entries.

    segzoo publish runs/unet_resnet10t_camvid --ship unet_resnet10t_camvid --recipe recipes/unet_resnet10t_camvid.yaml
    segzoo publish runs/unet_resnet10t_camvid --name unet_resnet10t_camvid --out dist/unet_resnet10t_camvid
    segzoo publish runs/unet_resnet10t_camvid --name unet_resnet10t_camvid --out dist/unet_resnet10t_camvid \\
        --eval runs/unet_resnet10t_camvid/eval-val-whole-calibrated.json   # with its calibration
    segzoo publish unet_resnet10t_camvid --push-to-hub org/unet_resnet10t_camvid   # a run or an entry
    segzoo publish --card                 # MODEL_CARD.md's "## Zoo entries" from zoo/weights/index.json
    segzoo publish --validation fcn8s_resnet10t_camvid runs/fcn8s_drives/eval-val-whole-calibrated.json \\
        --command "segzoo train recipes/fcn8s_resnet10t_camvid.yaml data.options.holdout=drives ..."
    segzoo publish --validation pspnet_resnet10t_camvid runs/pspnet_drives/eval-val-whole-s1.json \\
        --adopt-protocol          # eval scale 1.0, chosen on the holdout, becomes the entry's

--ship writes zoo/weights/<entry>.safetensors (fp16), its row of zoo/weights/index.json,
docs/entries/<entry>/ pictures and the card's entries. An existing entry's file is replaced
only for a gain of >= 0.02 mIoU (--force overrides): on the holdout validation the entry
records, which --holdout gives for the new recipe (it becomes the entry's record), else on val:

    segzoo publish runs/fcn8s_entry_fullres --ship fcn8s_resnet10t_camvid --pointer last \\
        --recipe recipes/fcn8s_resnet10t_camvid_fullres.yaml \\
        --eval runs/fcn8s_entry_fullres/eval-val-whole-calibrated.json \\
        --holdout runs/fcn8s_drives_fullres/eval-val-whole-calibrated.json \\
        --holdout-command "segzoo train recipes/fcn8s_resnet10t_camvid_fullres.yaml data.options.holdout=drives ..."

A re-ship that keeps the file byte for byte (a new calibration) needs no gain, only no loss.
--out writes config.json and model.safetensors for `zoo.load(URL, sha256=...)` (the sha256 of config.json, which
names the weights' own).
--push-to-hub uploads config.json, model.safetensors and a README.md model card
(HF_ENDPOINT and HF_TOKEN are honoured).
"""
import argparse
from pathlib import Path


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="run folder (checkpoints/best.json, else last.json), or an "
                                             "entry's name with --push-to-hub")
    p.add_argument("--ship", metavar="ENTRY", help="ship the run inside the package as ENTRY")
    p.add_argument("--recipe", default="", help="with --ship: the recipe file that reproduces the entry")
    p.add_argument("--command", default="", help="with --ship: the training command (default: from "
                                                  "--recipe); with --validation: the commands behind it")
    p.add_argument("--machine", default="", help="with --ship: where it was trained (default: this machine)")
    p.add_argument("--eval", default=None, help="with a run folder: an eval-*.json of the published "
                                                "checkpoint, whose metrics (and logit bias, from "
                                                "`segzoo eval --calibration`) go with it (default: the "
                                                "checkpoint's own val metrics)")
    p.add_argument("--holdout", default=None, metavar="EVAL_JSON",
                   help="with --ship: the recipe retrained with data.options.holdout, scored on that holdout "
                        "under the protocol shipped (an eval-*.json inside that run folder); the gain rule "
                        "reads it and the entry records it")
    p.add_argument("--holdout-command", default="", help="with --holdout: the commands behind it")
    p.add_argument("--force", action="store_true", help="with --ship: replace an entry even without a 0.02 gain")
    p.add_argument("--weights-dir", default=None, help="with --ship: default the package's zoo/weights")
    p.add_argument("--name", help="with --out: the entry's name, e.g. unet_resnet10t_camvid")
    p.add_argument("--out", help="folder to write")
    p.add_argument("--url", default=None, help="where --out will be served (default: its file:// URL)")
    p.add_argument("--push-to-hub", metavar="ORG/REPO", help="upload to the Hugging Face Hub")
    p.add_argument("--token", default=None, help="with --push-to-hub (default: HF_TOKEN or the saved login)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    p.add_argument("--pointer", default="best", choices=["best", "last"])
    p.add_argument("--validation", nargs=2, metavar=("ENTRY", "EVAL_JSON"),
                   help="record on a shipped entry how its recipe, retrained with data.options.holdout, "
                        "scores on that holdout (an eval-*.json inside that run folder); --command says how")
    p.add_argument("--adopt-protocol", action="store_true",
                   help="with --validation: make the evaluation's protocol (eval scales, flip), chosen on the "
                        "holdout, the entry's, and score its weights on val under it again")
    p.add_argument("--data-root", default=None, help="with --adopt-protocol: the data set's folder "
                                                     "(default: the entry recipe's data.root)")
    p.add_argument("--card", nargs="?", const="MODEL_CARD.md", metavar="PATH",
                   help="regenerate the card's entries section (default MODEL_CARD.md); "
                        "with --ship, the card to update")
    args = p.parse_args(argv)
    from zoo.commands.errors import run
    if args.validation:
        from zoo.lab.validation import record_validation
        name, eval_file = args.validation
        v = run(record_validation, name, eval_file, command=args.command, machine_name=args.machine,
                weights_dir=args.weights_dir, card=args.card, adopt_protocol=args.adopt_protocol,
                data_root=args.data_root)
        adopted = "; its protocol adopted, val re-scored" if args.adopt_protocol else ""
        print(f"{name}: holdout {v['holdout']} mIoU {_num(v['mIoU'])} recorded{adopted}; card updated")
        return
    modes = [bool(args.ship), bool(args.out), bool(args.push_to_hub)]
    if sum(modes) > 1 or (sum(modes) == 1 and not args.source) or (not any(modes) and args.card is None):
        p.error("give SOURCE with one of --ship ENTRY, --name NAME --out DIR, --push-to-hub ORG/REPO; or --card")
    if args.out and not args.name:
        p.error("--out needs --name")
    if args.ship:
        _ship(args, run)
    elif args.out:
        from zoo.hub.load import sha256_of
        from zoo.lab.publish import publish
        e = run(publish, args.source, args.name, args.out, url=args.url, pointer=args.pointer,
                eval_file=args.eval)
        pin = sha256_of(Path(args.out) / "config.json")
        print(f"wrote {args.out}: config.json, model.safetensors (sha256 {e.sha256}); "
              f"val mIoU {_num(e.metrics.get('mIoU'))}\nload it with zoo.load(URL, sha256=\"{pin}\") "
              f"once served at URL")
    elif args.push_to_hub:
        from zoo.lab.publish import push_to_hub
        commit, digest = run(push_to_hub, args.source, args.push_to_hub, token=args.token,
                             private=args.private, pointer=args.pointer, eval_file=args.eval)
        print(f"pushed {args.push_to_hub} at commit {commit}\n"
              f"load it with zoo.load(\"hf-hub:{args.push_to_hub}@{commit}\", sha256=\"{digest}\")")
    else:
        from zoo.hub.entries import SHIPPED_INDEX
        from zoo.lab.card import update_card
        from zoo.lab.ship import read_shipped
        changed = run(update_card, args.card, read_shipped(SHIPPED_INDEX.parent))
        print(f"{args.card}: {'updated' if changed else 'up to date'}")


def _ship(args, run):
    from zoo.lab.ship import ship
    s = run(ship, args.source, args.ship, weights_dir=args.weights_dir, card=args.card,
            eval_file=args.eval, recipe_file=args.recipe, command=args.command,
            machine_name=args.machine, force=args.force, pointer=args.pointer, holdout_file=args.holdout,
            holdout_command=args.holdout_command)
    was = f" (replacing val mIoU {_num(s['replaced'])})" if s["replaced"] is not None else ""
    h = s["holdout"]
    if h is not None:
        before = s["replaced_holdout"]
        was += (f"; holdout {h['holdout']} mIoU {_num(h['mIoU'])}"
                + (f" (was {_num(before)})" if before is not None else "") + " recorded")
    if s["replaced"] is not None and not s["file_replaced"]:
        was += "; the weights file is unchanged"
    print(f"shipped {s['entry']}: val mIoU {_num(s['mIoU'])}, pixel acc {_num(s['pixel_acc'])}{was}\n"
          f"  {s['weights']} ({s['megabytes']:.1f} MB fp16, sha256 {s['sha256'][:16]}...), "
          f"{s['pictures']} pictures, {s['card']} updated")


def _num(v):
    return "—" if v is None else f"{float(v):.4f}"


if __name__ == "__main__":
    main()
