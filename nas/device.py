"""Run-time device choice and seeding; nothing here touches CUDA at import."""

from __future__ import annotations

import logging
import os
import platform
import random
from functools import cache
from typing import Any

import numpy as np
import torch

from nas.errors import UserError

__all__ = ["resolve_device", "device_name", "device_provenance", "seed_everything", "set_threads"]

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU; asking for CUDA without one is a UserError."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available (use --device cpu)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)")
        return dev
    raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)")


@cache
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A human-readable identity of the device: the GPU's name or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({platform.machine()})"


def device_provenance(device: torch.device) -> dict[str, Any]:
    """What a run's provenance records of the device it ran on (`auto` resolved, the CUDA build if any)."""
    info: dict[str, Any] = {"device": str(device), "device_name": device_name(device)}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    else:
        info["threads"] = torch.get_num_threads()
    return info


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on CPU this makes runs repeatable bit for bit."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads when `threads` > 0."""
    if threads > 0:
        torch.set_num_threads(threads)
