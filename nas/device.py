"""Run-time device choice and seeding; nothing here touches CUDA at import."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from nas.errors import UserError

__all__ = ["resolve_device", "seed_everything", "set_threads"]

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
