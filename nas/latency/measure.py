"""Timing a module on a device and backend: median of repeated runs after warm-up.

Backends are pluggable (:class:`LatencyBackend`): torch eager on CPU (threads configurable) or CUDA (CUDA
events, synchronised), and ONNX Runtime on CPU. Each reports the identity of what it measured on
(:meth:`LatencyBackend.provenance`), which a latency table carries so it is never used on another device.

A CPU's speed drifts while it is measured: frequency scaling and other tenants of a shared host change the time
of one convolution by ±15% over a few seconds, and two threads stall together when either is descheduled. A
:class:`SpeedReference` (a fixed convolution) is timed right before and after every CPU measurement, and the
measurement is reported at the reference's *nominal* speed: `ms · nominal / reference now`. The drift is common
to both, so it cancels; on a quiet machine the factor stays ≈ 1.
"""

from __future__ import annotations

import io
import logging
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from nas.device import device_name
from nas.errors import UserError

__all__ = [
    "LatencyBackend",
    "TorchBackend",
    "OnnxRuntimeBackend",
    "BACKENDS",
    "create_backend",
    "median_ms",
    "Clock",
    "HostClock",
    "CudaClock",
    "SpeedReference",
]

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Times a stretch of work: `start()`, launch the calls, `stop()` returns the ms they took to finish."""

    def start(self) -> None: ...

    def stop(self) -> float: ...


class HostClock:
    """Wall time on the host (CPU work is synchronous)."""

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        return (time.perf_counter() - self._t0) * 1e3


class CudaClock:
    """CUDA events on the device's current stream, from an idle GPU: the window holds the host's launch time
    as well as the kernels' (eager networks at small inputs are launch-bound), and `stop` waits for the end."""

    def __init__(self, device: torch.device):
        self.device = device
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        torch.cuda.synchronize(self.device)  # nothing queued: the first kernel starts when it is launched
        self._start.record(torch.cuda.current_stream(self.device))

    def stop(self) -> float:
        self._end.record(torch.cuda.current_stream(self.device))
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def median_ms(fn: Callable[[], Any], warmup: int, repeats: int, min_run_ms: float = 2.0,
              clock: Clock | None = None) -> float:
    """Median time of one call of `fn` in ms. Calls shorter than `min_run_ms` are run back to back in batches
    timed as one, so the clock's own resolution and overhead (a CUDA synchronisation costs about as much as a
    small kernel) stay out of the figure, as they stay out of a network that runs its units back to back."""
    clock = clock or HostClock()
    for _ in range(warmup):
        fn()
    clock.start()
    fn()
    single = clock.stop()
    inner = max(1, int(min_run_ms / max(single, 1e-3)))
    samples = []
    for _ in range(repeats):
        clock.start()
        for _ in range(inner):
            fn()
        samples.append(clock.stop() / inner)
    return statistics.median(samples)


class SpeedReference:
    """A fixed workload (two 3×3 convolutions, 32 channels at 64×128) that tracks the CPU's current speed.

    Its time depends on what ran just before it (on this kind of machine it is twice as slow run back to back
    as right after a large convolution), so it is always sampled in the same context: after a measured module,
    or in :meth:`calibrate` after a convolution as large as a typical unit. `samples` keeps every sample, so a
    table build can take its nominal time as the median seen while it measured (see
    :func:`nas.latency.table.build_table`)."""

    description = "2x conv3x3 32->32 @64x128, median of 3, after the measured module"
    REUSE_S = 0.05  # a sample this recent stands in for the next measurement's "before" sample

    def __init__(self, device: torch.device, nominal_ms: float | None = None):
        self.device = device
        gen = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.net = self.net.to(device).eval()
        self.x = torch.randn(1, 32, 64, 128, generator=gen).to(device)
        self.nominal_ms = nominal_ms
        self.samples: list[float] = []
        self._last: tuple[float, float] | None = None  # (when, ms) of the latest sample
        self.on_calibrated: Callable[[float], None] | None = None  # called once a missing nominal is calibrated

    def sample_ms(self, runs: int = 3) -> float:
        """The reference's time now: median of `runs` calls."""
        times = []
        with torch.inference_mode():
            for _ in range(runs):
                t0 = time.perf_counter()
                self.net(self.x)
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def calibrate(self, seconds: float = 1.0) -> float:
        """Set the nominal time: the median of samples over `seconds`, each after a 64-channel 3×3 convolution
        at 128×256 (the context of a real measurement)."""
        load = nn.Conv2d(64, 64, 3, padding=1).to(self.device).eval()
        xl = torch.randn(1, 64, 128, 256, device=self.device)
        samples, t0 = [], time.perf_counter()
        with torch.inference_mode():
            while time.perf_counter() - t0 < seconds or len(samples) < 5:
                load(xl)
                samples.append(self.sample_ms())
        self.nominal_ms = statistics.median(samples[2:] or samples)
        return self.nominal_ms

    def normalised(self, measure: Callable[[], float]) -> tuple[float, float]:
        """`measure()` at the nominal speed, and as measured (both ms)."""
        if self.nominal_ms is None:
            self.calibrate()
            if self.on_calibrated is not None:
                self.on_calibrated(self.nominal_ms)
        now = time.perf_counter()
        if self._last is not None and now - self._last[0] < self.REUSE_S:
            before = self._last[1]  # the previous measurement's "after" was taken just now: the same speed
        else:
            before = self.sample_ms()
            self.samples.append(before)
        raw = measure()
        after = self.sample_ms()
        self.samples.append(after)
        self._last = (time.perf_counter(), after)
        return raw * float(self.nominal_ms) / ((before + after) / 2), raw

    def provenance(self) -> dict[str, Any]:
        return {"module": self.description, "nominal_ms": self.nominal_ms}


def _timed(reference: SpeedReference | None, measure: Callable[[], float]) -> tuple[float, float]:
    """`measure()` as reported (at the reference's nominal speed, if any) and as measured, both ms."""
    if reference is None:
        raw = measure()
        return raw, raw
    return reference.normalised(measure)


class LatencyBackend(Protocol):
    """Measures the latency of a module for a given input shape."""

    name: str

    def measure(self, module: nn.Module, input_shapes: list[tuple[int, ...]], warmup: int | None = None,
                repeats: int | None = None) -> float:
        """Median latency in ms of `module(*inputs)` with inputs of the given shapes (`warmup` and `repeats`
        default to the backend's own)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What identifies the measurement conditions (device, backend, dtype, threads, versions)."""
        ...


class TorchBackend:
    """torch eager, inference mode; on CUDA timed with events (:class:`CudaClock`)."""

    name = "torch"

    def __init__(self, device: torch.device, threads: int = 0, dtype: torch.dtype = torch.float32,
                 warmup: int = 5, repeats: int = 15, reference: SpeedReference | None = None):
        self.device, self.threads, self.dtype = device, threads, dtype
        self.warmup, self.repeats = warmup, repeats
        self.reference = reference if device.type == "cpu" else None  # CUDA events need no normalising
        self.last_raw_ms = float("nan")
        if threads > 0 and device.type == "cpu":
            torch.set_num_threads(threads)

    def _inputs(self, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return [torch.randn(s, device=self.device, dtype=self.dtype) for s in shapes]

    def _warm_process(self) -> None:
        """The first timings of a process run slow (thread pools spin up, allocator and kernel caches are
        empty): burn ~0.5 s of convolutions once before the first real measurement."""
        if getattr(self, "_warm", False):
            return
        conv = nn.Conv2d(32, 32, 3, padding=1).to(self.device, self.dtype).eval()
        x = torch.randn(1, 32, 64, 64, device=self.device, dtype=self.dtype)
        t0 = time.perf_counter()
        with torch.inference_mode():
            while time.perf_counter() - t0 < 0.5:
                conv(x)
        self._warm = True

    def measure(self, module: nn.Module, input_shapes: list[tuple[int, ...]], warmup: int | None = None,
                repeats: int | None = None) -> float:
        self._warm_process()
        module = module.to(self.device, self.dtype).eval()
        inputs = self._inputs(input_shapes)
        warmup = self.warmup if warmup is None else warmup
        repeats = self.repeats if repeats is None else repeats
        clock = CudaClock(self.device) if self.device.type == "cuda" else None
        with torch.inference_mode():
            timed = lambda: median_ms(lambda: module(*inputs), warmup, repeats, clock=clock)  # noqa: E731
            ms, self.last_raw_ms = _timed(self.reference, timed)
            return ms

    def provenance(self) -> dict[str, Any]:
        threads = torch.get_num_threads() if self.device.type == "cpu" else None
        return {
            "backend": self.name,
            "device_type": self.device.type,
            "device": device_name(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "threads": threads,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if self.device.type == "cuda" else None,
            "speed_reference": self.reference.provenance() if self.reference else None,
        }


class OnnxRuntimeBackend:
    """ONNX Runtime on CPU: the module is exported to ONNX in memory, then timed in an InferenceSession."""

    name = "onnxruntime"

    def __init__(self, threads: int = 0, warmup: int = 5, repeats: int = 15, reference: SpeedReference | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the onnxruntime backend needs the 'onnx' extra: pip install '.[onnx]'") from None
        self.ort, self.threads = ort, threads
        self.warmup, self.repeats = warmup, repeats
        self.reference = reference
        self.last_raw_ms = float("nan")
        # module → {input shapes: (session, input names)}: a network timed in many rounds is exported once
        self._sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def session(self, module: nn.Module, input_shapes: list[tuple[int, ...]]):
        """An ORT session for `module` (exported with the legacy TorchScript-based exporter)."""
        module = module.cpu().float().eval()
        inputs = tuple(torch.zeros(s) for s in input_shapes)
        buf = io.BytesIO()
        names = [f"x{i}" for i in range(len(inputs))]
        with torch.no_grad():
            torch.onnx.export(module, inputs, buf, input_names=names, opset_version=17, dynamo=False)
        opts = self.ort.SessionOptions()
        if self.threads > 0:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return self.ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"]), names

    def measure(self, module: nn.Module, input_shapes: list[tuple[int, ...]], warmup: int | None = None,
                repeats: int | None = None) -> float:
        import numpy as np

        key = tuple(tuple(x) for x in input_shapes)
        cached = self._sessions.setdefault(module, {})
        if key not in cached:
            cached[key] = self.session(module, input_shapes)
        sess, names = cached[key]
        feed = {n: np.random.default_rng(0).standard_normal(s).astype("float32") for n, s in zip(names, input_shapes)}
        warmup = self.warmup if warmup is None else warmup
        repeats = self.repeats if repeats is None else repeats
        timed = lambda: median_ms(lambda: sess.run(None, feed), warmup, repeats)  # noqa: E731
        ms, self.last_raw_ms = _timed(self.reference, timed)
        return ms

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device_type": "cpu",
            "device": device_name(torch.device("cpu")),
            "dtype": "float32",
            "threads": self.threads or None,
            "onnxruntime": self.ort.__version__,
            "torch": torch.__version__,
            "speed_reference": self.reference.provenance() if self.reference else None,
        }


BACKENDS = ("torch", "onnxruntime")


def create_backend(name: str, device: torch.device, threads: int = 0, warmup: int = 5,
                   repeats: int = 15, reference: SpeedReference | None = None) -> LatencyBackend:
    """A backend by name; ONNX Runtime runs on CPU only. `reference` normalises CPU timings (see the module)."""
    if name == "torch":
        return TorchBackend(device, threads=threads, warmup=warmup, repeats=repeats, reference=reference)
    if name == "onnxruntime":
        if device.type != "cpu":
            raise UserError("the onnxruntime backend measures on CPU only (use --device cpu)")
        return OnnxRuntimeBackend(threads=threads, warmup=warmup, repeats=repeats, reference=reference)
    raise UserError(f"unknown latency backend '{name}' (known: {', '.join(BACKENDS)})")
