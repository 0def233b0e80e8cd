"""An entry's sequence-disjoint validation: `segzoo publish --validation ENTRY EVAL_JSON
[--adopt-protocol]` records how the entry's recipe, retrained with `data.options.holdout`,
scores on that holdout, and may make the protocol chosen there the entry's. (`ship` records
one itself with `holdout_file`, and judges a replacement on it; see zoo/lab/ship.py.)"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from zoo.hub import entries
from zoo.hub import load as hub
from zoo.lab import card as card_mod
from zoo.lab.ship import REPO, ShipError, figure_protocol, holdout_record, read_shipped, write_index


def record_validation(name: str, eval_file, *, command: str = "", machine_name: str = "", weights_dir=None,
                      card=None, adopt_protocol: bool = False, data_root: str | None = None,
                      evaluate=None) -> dict:
    """Record on entry `name` how its recipe does on frames of other sequences: `eval_file` is
    an evaluation (`segzoo eval`, calibrated or not) of a run of the entry's architecture trained
    with `data.options.holdout` (its recipe.yaml beside it says which), scored on that holdout
    under the entry's evaluation protocol. The card shows it beside the val figure; the weights
    are not touched.

    ``adopt_protocol``: the evaluation's protocol (eval scales, flip) was chosen on that holdout
    and becomes the entry's: its shipped weights are scored on val under it again (``evaluate``,
    default `zoo.inference.score.evaluate_run`, with ``data_root``) for the card's val figure,
    and the notes say what the holdout figure was under the protocol it replaces."""
    weights_dir = Path(weights_dir or entries.SHIPPED_INDEX.parent)
    card = Path(card or REPO / "MODEL_CARD.md")
    shipped = read_shipped(weights_dir)
    if name not in shipped:
        raise ShipError(f"--validation {name}: no shipped entry of that name in {weights_dir / 'index.json'}")
    eval_file = Path(eval_file)
    entry = shipped[name]
    validation, protocol = holdout_record(eval_file, entry.model, name, entry.eval_protocol, command,
                                           machine_name)
    stored = figure_protocol(entry.eval_protocol)
    if protocol == stored:
        entry = dataclasses.replace(entry, validation=validation)
    elif not adopt_protocol:
        raise ShipError(f"{eval_file}: scored under {card_mod.protocol(protocol)}, not entry {name}'s protocol "
                        f"({card_mod.protocol(stored)}); evaluate the run under the entry's, or make this "
                        "protocol the entry's with --adopt-protocol")
    else:
        entry = _adopt(entry, protocol, validation, data_root, evaluate, eval_file.name)
    write_index(weights_dir, {**shipped, name: entry})
    card_mod.update_card(card, read_shipped(weights_dir))
    return validation


def _adopt(entry: hub.Entry, protocol: dict, validation: dict, data_root, evaluate, eval_name: str) -> hub.Entry:
    if evaluate is None:
        from zoo.inference.score import evaluate_run as evaluate
    result = evaluate(entry.name, mode=protocol["mode"], crop_size=protocol["crop_size"],
                      stride=protocol["stride"], scales=protocol["scales"], flip=protocol["flip"],
                      data_root=data_root)
    frame = (result.get("protocol") or {}).get("frame_size")
    old, before = figure_protocol(entry.eval_protocol), entry.validation
    num = card_mod._num
    was = (f" ({num(before['mIoU'])} under the protocol it replaces: {card_mod.protocol(old)})"
           if before and before.get("holdout") == validation["holdout"] else f" (it replaces {card_mod.protocol(old)})")
    note = (f"Evaluation protocol chosen on the `holdout: {validation['holdout']}` validation: "
            f"{num(validation['mIoU'])} there{was}; val re-scored under it by `segzoo publish --validation "
            f"{entry.name} <run>/{eval_name} --adopt-protocol` ({validation['machine']}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d})"
            + ("; the flip doubles what `zoo.predict` costs against the latency above." if protocol["flip"]
               and not old["flip"] else "."))
    return dataclasses.replace(
        entry, validation=validation, notes=" ".join(n for n in (entry.notes, note) if n),
        eval_protocol=protocol | ({"frame_size": list(frame)} if frame else {}),
        metrics={k: result[k] for k in ("mIoU", "pixel_acc", "mean_acc", "per_class_iou") if k in result})
