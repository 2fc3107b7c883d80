"""Test-wide settings: one torch thread (small tensors run faster without thread hand-offs, and a shared 2-core
machine stays responsive); subprocesses inherit the same through the environment."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
