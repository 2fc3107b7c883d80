"""Latency tables: unit keys, resumable builds, provenance checks, the fitted correction."""

from __future__ import annotations

import pytest
import torch

from nas.errors import UserError
from nas.latency.measure import median_ms
from nas.latency.table import LatencyTable, TableMismatch, build_table, cache_key
from nas.latency.units import enumerate_units
from search_spaces.arch import SpaceSpec

SPEC = SpaceSpec(name="t", layers=4, fch=2, ops=("skip", "conv", "zoomed_conv_2x"), widths=(0.5, 1.0), num_classes=3)
HW = (64, 128)  # zoomed ops at 1/32 need at least 2×2 there


class CountingBackend:
    """A stand-in clock: latency = parameter count / 1000 (deterministic), counting calls."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def measure(self, module, shapes):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        module(*[torch.zeros(s) for s in shapes])
        return 0.01 + sum(p.numel() for p in module.parameters()) / 1000

    def provenance(self):
        return {"backend": "fake", "device": "test-cpu", "dtype": "float32", "threads": 1}


def _prov():
    return {**CountingBackend().provenance(), "batch": 1, "input_hw": list(HW)}


def test_enumeration_has_unique_keys_and_modules_run():
    units = list(enumerate_units(SPEC, HW, (0.5, 1.0), (0.5, 1.0)))
    assert len({u.key for u in units}) == len(units)
    kinds = {u.key.split(":")[0] for u in units}
    assert kinds == {"stem", "op", "fusion", "ffm", "head", "up"}
    for u in units[:: max(1, len(units) // 25)]:
        u.make().eval()(*[torch.zeros(s) for s in u.shapes])


def test_build_is_resumable_after_interrupt(tmp_path):
    units = list(enumerate_units(SPEC, HW, (0.5,), (0.5,)))
    path = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        build_table(units, CountingBackend(fail_after=7), _prov(), path, progress=False, save_every=3)
    partial = LatencyTable.load(path)
    assert len(partial.entries) == 7 and partial.provenance["complete"] is False
    backend = CountingBackend()
    table = build_table(units, backend, _prov(), path, progress=False)
    assert backend.calls == len(units) - 7  # only the missing entries were measured
    assert table.provenance["complete"] is True
    again = CountingBackend()
    build_table(units, again, _prov(), path, progress=False)
    assert again.calls == 0  # a second build is instant


def test_table_refused_for_other_conditions(tmp_path):
    table = LatencyTable(provenance=_prov(), entries={"a": 1.0}, path=tmp_path / "t.json")
    table.save()
    loaded = LatencyTable.load(tmp_path / "t.json")
    loaded.check_compatible(_prov())
    other = {**_prov(), "device": "NVIDIA H100", "backend": "torch"}
    with pytest.raises(TableMismatch, match="device") as info:
        loaded.check_compatible(other)
    assert "latency.force=true" in str(info.value)
    loaded.check_compatible(other, force=True)
    assert cache_key(other) != cache_key(_prov())


def test_missing_entry_and_bad_files(tmp_path):
    table = LatencyTable(provenance=_prov(), entries={"a": 1.0})
    with pytest.raises(UserError, match="no entry 'b'"):
        table.lookup("b")
    bad = tmp_path / "bad.json"
    bad.write_text('{"table_version": 1, "provenance": {}, "entries": {"a": "fast"}}')
    with pytest.raises(UserError, match="entries"):
        LatencyTable.load(bad)


def test_correction_is_applied():
    table = LatencyTable(provenance=_prov(), entries={}, correction={"scale": 2.0, "offset_ms": 1.0, "n": 3})
    assert table.corrected(3.0) == pytest.approx(7.0)


def test_median_ms_batches_fast_calls():
    calls = []
    ms = median_ms(lambda: calls.append(1), warmup=1, repeats=3, min_run_ms=1.0)
    assert ms >= 0 and len(calls) > 5


class _ScriptedClock:
    """Each call between start and stop takes 0.1 ms; the 7th timed batch is slow (an outlier)."""

    def __init__(self, calls: list[int]):
        self.calls, self.batches = calls, 0

    def start(self) -> None:
        self.mark = len(self.calls)

    def stop(self) -> float:
        self.batches += 1
        return (len(self.calls) - self.mark) * 0.1 * (10 if self.batches == 7 else 1)


def test_median_ms_reports_one_call_of_a_batch_timed_by_the_clock():
    calls: list[int] = []
    clock = _ScriptedClock(calls)
    ms = median_ms(lambda: calls.append(1), warmup=2, repeats=9, min_run_ms=2.0, clock=clock)
    assert ms == pytest.approx(0.1)  # per call, the outlier batch discarded by the median
    assert clock.batches == 10 and len(calls) == 2 + 1 + 9 * 20  # warm-up, the sizing call, 9 batches of 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_backend_agrees_with_synchronised_wall_time():
    import time

    from nas.latency.measure import TorchBackend

    dev = torch.device("cuda")
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    backend = TorchBackend(dev, warmup=5, repeats=15)
    ms = backend.measure(conv, [(4, 64, 256, 512)])
    x = torch.randn(4, 64, 256, 512, device=dev)
    conv = conv.to(dev)
    with torch.inference_mode():
        for _ in range(5):
            conv(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            conv(x)
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3 / 50
    assert 0.5 * wall < ms < 1.5 * wall


def test_arch_show_prints_predicted_latency_from_a_table(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from search_spaces.arch import save_architecture
    from search_spaces.random_arch import random_architecture

    arch = random_architecture(SPEC, np.random.default_rng(0), stem_width=1.0, head_width=1.0)
    save_architecture(arch, tmp_path / "a.json")
    units = enumerate_units(SPEC, HW, (1.0,), (1.0,))
    table = LatencyTable(provenance={**_prov(), "input_hw": list(HW)}, entries={u.key: 0.5 for u in units})
    table.save(tmp_path / "t.json")
    res = subprocess.run([sys.executable, "-m", "nas", "arch", "show", str(tmp_path / "a.json"), "--input", "64x128",
                          "--table", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    line = [x for x in res.stdout.splitlines() if x.startswith("predicted latency")][0]
    assert "ms" in line and float(line.split(":")[1].split("ms")[0]) > 0
