"""nas: latency-aware architecture search for real-time semantic segmentation, with distillation.

The Python API (:mod:`nas.api`) is available at the top level and imported on first use, so ``import nas``
stays light: ``nas.load_model``, ``nas.predict``, ``nas.run``, ``nas.search``, ``nas.train``, ``nas.export``,
``nas.load_config``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load_config", "load_model", "predict", "search", "train", "export", "run")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from nas import api

        return getattr(api, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
