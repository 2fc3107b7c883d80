"""Every export is compared with the eager model, and every backend is timed.

:func:`check_inputs` gives the inputs the comparison runs on: a seeded random batch of two (which also checks
the dynamic batch axis) and a few real val images of the configured dataset. :func:`verify_artifact` runs an
exported file on them (TorchScript through `torch.jit.load`, ONNX through an ONNX Runtime session) and reports
max |exported − eager| on the logits; above `atol + rtol · max |eager logits|` (float32 rounding grows with the
logits' size, as in numpy's `allclose`) the file is removed and a UserError names the format and the
difference, so no unchecked export is left behind. :func:`measure_latencies` times eager torch, TorchScript and
ONNX Runtime on the CPU at one input size with the same thread count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.config import DataConfig
from nas.errors import UserError
from nas.exporter.torchscript import Artifact, load_torchscript, logits_only
from search_spaces.upsample import resize

__all__ = ["Verification", "check_inputs", "artifact_runner", "verify_artifact", "measure_latencies"]

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Verification:
    """The numeric comparison of one exported file with the eager model (max abs difference on the logits)."""

    format: str
    path: str
    max_abs_diff: float
    atol: float
    diffs: dict[str, float] = field(default_factory=dict)  # input set name → max abs difference on it
    logit_scale: float = 0.0  # max |eager logits| over the inputs: float32 rounding grows with it
    rtol: float = 0.0

    @property
    def tolerance(self) -> float:
        """What the difference may reach: `atol + rtol · logit_scale`."""
        return self.atol + self.rtol * self.logit_scale

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance


def check_inputs(input_hw: tuple[int, int], data: DataConfig | None = None, n_real: int = 4,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Named input batches `[B, 3, H, W]`: "random" (B = 2, standard normal, seeded) and, when `data` is given
    and readable, "real" (up to `n_real` val images, ImageNet-normalised, resized to `input_hw`)."""
    h, w = input_hw
    g = torch.Generator().manual_seed(seed)
    inputs = {"random": torch.randn(2, 3, h, w, generator=g)}
    if data is None or n_real <= 0:
        return inputs
    from nas.data import build_dataset

    try:
        ds = build_dataset(data, "val", augment=False)
    except UserError as exc:
        log.warning("no real images for the export check (%s); comparing on random inputs only", exc)
        return inputs
    n = min(n_real, len(ds))
    if n == 0:
        log.warning("the %s val split is empty; comparing on random inputs only", data.name)
        return inputs
    real = torch.stack([ds[i]["image"] for i in range(n)]).float()
    inputs["real"] = resize(real, [h, w])
    return inputs


def artifact_runner(artifact: Artifact, threads: int = 0) -> Runner:
    """A function `[B, 3, H, W]` → logits `[B, K, H, W]` that runs the exported file (CPU)."""
    if artifact.format == "torchscript":
        module = load_torchscript(artifact.path)

        def run_ts(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)

        return run_ts
    if artifact.format == "onnx":
        from nas.exporter.onnx import INPUT_NAME, onnx_session

        sess = onnx_session(artifact.path, threads)

        def run_ort(x: torch.Tensor) -> torch.Tensor:
            (out,) = sess.run(None, {INPUT_NAME: x.detach().cpu().numpy().astype(np.float32)})
            return torch.from_numpy(out)

        return run_ort
    raise ValueError(f"format {artifact.format!r} has no runtime to verify (known: torchscript, onnx).")


def _max_abs(out: torch.Tensor, ref: torch.Tensor) -> float:
    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    diff = (out.float() - ref.float()).abs()
    return math.inf if not torch.isfinite(diff).all() else float(diff.max())


def verify_artifact(artifact: Artifact, model: nn.Module, inputs: dict[str, torch.Tensor], atol: float,
                    threads: int = 0, rtol: float = 0.0) -> Verification:
    """Compare the exported file with eager `model` on every input batch; above `atol + rtol · max |logits|`,
    delete it and raise."""
    wrapper = logits_only(model)
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        run = artifact_runner(artifact, threads)
        diffs: dict[str, float] = {}
        scale = 0.0
        for name, x in inputs.items():
            with torch.no_grad():
                ref = wrapper(x.to(device)).cpu()
            diffs[name] = _max_abs(run(x.cpu()), ref)
            scale = max(scale, float(ref.abs().max()))
    except Exception:
        Path(artifact.path).unlink(missing_ok=True)
        raise
    result = Verification(artifact.format, str(artifact.path), max(diffs.values(), default=math.inf), atol, diffs,
                          scale, rtol)
    if not result.ok:
        Path(artifact.path).unlink(missing_ok=True)
        worst = max(diffs, key=lambda k: diffs[k])
        raise UserError(
            f"{artifact.format} export does not match the eager model: max |exported - eager| on the logits is "
            f"{result.max_abs_diff:.3g} on the {worst} inputs, above export.atol + export.rtol · {scale:.3g} = "
            f"{result.tolerance:.3g}; removed {artifact.path}"
        )
    log.info("%s export matches eager: max abs diff %.3g (tolerance %.3g)", artifact.format, result.max_abs_diff,
             result.tolerance)
    return result


def measure_latencies(model: nn.Module, artifacts: Sequence[Artifact], input_hw: tuple[int, int],
                      threads: int = 0, warmup: int = 5, repeats: int = 15) -> dict[str, float]:
    """Median CPU latency in ms of one `[1, 3, H, W]` image: "torch_eager", and "torchscript" / "onnxruntime"
    for the artifacts of those formats, all with `threads` intra-op threads (0 = the libraries' default)."""
    from nas.latency.measure import TorchBackend, median_ms

    cpu = torch.device("cpu")
    shape = (1, 3, *input_hw)
    previous = torch.get_num_threads()
    result: dict[str, float] = {}
    try:
        torch_backend = TorchBackend(cpu, threads=threads, warmup=warmup, repeats=repeats)
        result["torch_eager"] = torch_backend.measure(logits_only(model).to(cpu), [shape])
        for artifact in artifacts:
            if artifact.format == "torchscript":
                result["torchscript"] = torch_backend.measure(load_torchscript(artifact.path), [shape])
            elif artifact.format == "onnx":
                from nas.exporter.onnx import INPUT_NAME, onnx_session

                sess = onnx_session(artifact.path, threads)
                feed = {INPUT_NAME: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
                result["onnxruntime"] = median_ms(lambda s=sess, f=feed: s.run(None, f), warmup, repeats)
    finally:
        torch.set_num_threads(previous)
    return result
