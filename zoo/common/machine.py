"""Facts about the machine a number was measured on, in one place.

`machine_info()` is the record benchmarks write beside their rows (JSON);
`describe()` the one-line form reports, model cards and shipped entries print.
`peak_bf16_tflops` looks up a GPU's dense bf16 peak for model FLOP utilisation.
torch (and timm, smp) are imported only when asked, so any layer may import this.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

# Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA datasheets); the first name
# contained in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "H800": 989,
    "A100": 312, "A800": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125,
    "RTX 4090": 165, "RTX 3090": 71, "V100": 125,
}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """When, by which command and on what: date, command, system, python, torch (and timm,
    segmentation_models_pytorch where installed), CPU, cores, torch threads, GPU and count."""
    import torch
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    for key, package in (("timm", "timm"), ("smp", "segmentation_models_pytorch")):
        version = _version(package)
        if version:
            info[key] = version
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    return info


def describe(info: dict | None = None, *, gpu: bool = True, threads: bool = False) -> str:
    """`<cpu>, <n> cores[, <k> x <gpu>]; torch <version>[, <t> torch thread(s)]`;
    `gpu=False` leaves any GPU out (numbers measured on the CPU)."""
    info = info or machine_info()
    text = f"{info['cpu']}, {info['cpu_count']} cores"
    if gpu and info.get("gpu"):
        text += f", {info.get('gpu_count', 1)} x {info['gpu']}"
    text += f"; torch {info['torch']}"
    if threads:
        text += f", {info['threads']} torch thread(s)"
    return text


def peak_bf16_tflops(gpu_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its `torch.cuda.get_device_name`; None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in gpu_name:
            return float(tflops)
    return None
