"""Decoder ablations: architecture x upsampler (x encoder x seed) grids of
ordinary runs, and a report comparing them (mIoU, cost, checkerboard score,
pictures).

    from zoo.ablate import ablate
    ablate("recipes/ablation_quickstart.yaml", "reports/quick")

`grid` reads ablation files and trains the cells (resumable, side by side
on several devices), `measure` takes each finished run folder's numbers,
`report` writes the Markdown and self-contained HTML report with its plots.
"""
from __future__ import annotations

from pathlib import Path

from zoo.ablate.grid import Ablation, AblationError, Cell, load_ablation, train_cells


def ablate(ablation_file, out, *, overrides=(), jobs: int = 1, devices=None,
           report_only: bool = False, measure_device: str = "auto", command: str | None = None,
           log=print) -> Path:
    """Train the grid's unfinished cells (unless `report_only`), measure every
    finished one and write the report into `out`; returns the Markdown path.
    Failed or missing cells are left out of the report and named; the call
    then raises once the report is written."""
    from zoo.ablate.report import write_report
    from zoo.engine.distributed import device_for

    ablation = load_ablation(ablation_file, overrides)
    out = Path(out)
    failed = [] if report_only else train_cells(ablation, out, jobs=jobs, devices=devices, log=log)
    path = write_report(ablation, out, device=device_for(measure_device), command=command, log=log)
    if failed:
        from zoo.engine.trainer import TrainingError
        raise TrainingError(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the report "
                           f"{path} leaves them out. Rerun the same command to retry them.")
    return path


__all__ = ["Ablation", "AblationError", "Cell", "ablate", "load_ablation", "train_cells"]
