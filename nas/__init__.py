"""nas: latency-aware architecture search for real-time semantic segmentation, with distillation."""

__version__ = "0.1.0"

__all__ = ["__version__"]
