"""Decoder ablations: architecture x upsampler (x encoder x seed) grids of
ordinary runs, and a report comparing them (mIoU, cost, checkerboard score,
pictures).

    from zoo.lab.ablate import ablate
    ablate("recipes/ablation_quickstart.yaml", "reports/quick")

`grid` reads ablation files and trains the cells (resumable, side by side
on several devices), `measure` takes each finished run folder's numbers,
`report` writes the Markdown and self-contained HTML report with its plots
(`page` renders it), opening with the paired comparisons against a reference
upsampler (`paired` computes them, `decision` tables them and writes
`summary.json`). `register_measurement` adds a number to every report.
"""
from __future__ import annotations

from pathlib import Path

from zoo.engine.distributed import device_for
from zoo.engine.trainer import TrainingError
from zoo.lab.ablate.grid import Ablation, AblationError, Cell, load_ablation, train_cells
from zoo.lab.ablate.measure import MEASUREMENTS, register_measurement
from zoo.lab.ablate.report import write_report


def ablate(ablation_file, out, *, overrides=(), jobs: int = 1, devices=None, only=(),
           report_only: bool = False, measure_device: str = "auto", command: str | None = None,
           log=print) -> Path:
    """Train the grid's unfinished cells (unless `report_only`), measure every
    finished one and write the report into `out`; returns the Markdown path.
    `only` (cell-name patterns) trains a slice of the grid; the report covers every
    finished cell. Failed or missing cells are left out of the report and named; the call
    then raises once the report is written."""
    ablation = load_ablation(ablation_file, overrides)
    out = Path(out)
    failed = [] if report_only else train_cells(ablation, out, jobs=jobs, devices=devices, only=only, log=log)
    path = write_report(ablation, out, device=device_for(measure_device), command=command, log=log)
    if failed:
        raise TrainingError(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the report "
                           f"{path} leaves them out. Rerun the same command to retry them.")
    return path


__all__ = ["Ablation", "AblationError", "Cell", "MEASUREMENTS", "ablate", "load_ablation", "register_measurement",
           "train_cells"]
