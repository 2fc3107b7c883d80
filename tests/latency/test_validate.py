"""Whole-network validation of a latency table: drift normalisation, the settled nominal speed of a build, the
fresh vs build-time correction, networks spread over the latency range, and the real CLI on a tiny space."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from nas.latency.measure import SpeedReference, TorchBackend
from nas.latency.table import LatencyTable, build_table
from nas.latency.units import enumerate_units
from nas.latency.validate import kendall_tau, kendall_tau_interval, random_networks, validate
from search_spaces.arch import SpaceSpec
from search_spaces.builder import build_network

SPEC = SpaceSpec(name="t", layers=4, fch=2, ops=("skip", "conv", "zoomed_conv_2x"), widths=(0.5, 0.75, 1.0),
                 num_classes=3)
HW = (64, 128)
CPU = torch.device("cpu")


class ScriptedReference(SpeedReference):
    """A speed reference whose samples follow a script (the machine's speed over time)."""

    def __init__(self, script: list[float], nominal_ms: float | None = 2.0):
        super().__init__(CPU, nominal_ms)
        self.script = list(script)

    def sample_ms(self, runs: int = 3) -> float:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class Clock:
    """A stand-in backend: a unit's latency is its parameter count / 1000, times the machine's `slowdown`."""

    name = "fake"

    def __init__(self, reference: SpeedReference | None = None, slowdown: float = 1.0):
        self.reference, self.slowdown, self.calls = reference, slowdown, 0

    def measure(self, module, shapes, warmup=None, repeats=None):
        self.calls += 1
        base = 0.05 + sum(p.numel() for p in module.parameters()) / 1000

        def timed() -> float:
            return base * self.slowdown

        return self.reference.normalised(timed)[0] if self.reference else timed()

    def provenance(self):
        prov = {"backend": "fake", "device": "test-cpu", "dtype": "float32", "threads": 1, "batch": 1,
                "input_hw": list(HW)}
        if self.reference:
            prov["speed_reference"] = self.reference.provenance()
        return prov


def test_normalised_timing_cancels_a_slow_spell():
    ref = ScriptedReference([4.0, 4.0], nominal_ms=2.0)  # the machine runs at half speed right now
    ms, raw = ref.normalised(lambda: 30.0)
    assert raw == 30.0 and ms == pytest.approx(15.0)
    assert ref.samples == [4.0, 4.0]
    real = TorchBackend(CPU, threads=1, warmup=1, repeats=2, reference=SpeedReference(CPU, nominal_ms=1.0))
    ms = real.measure(torch.nn.Conv2d(3, 8, 3, padding=1), [(1, 3, 32, 32)])
    assert ms > 0 and real.last_raw_ms > 0 and len(real.reference.samples) == 2
    assert real.provenance()["speed_reference"]["nominal_ms"] == 1.0


def test_a_new_table_settles_on_the_reference_speed_seen_while_it_measured(tmp_path):
    units = list(enumerate_units(SPEC, HW, (0.5,), (0.5,)))[:20]
    path = tmp_path / "t.json"
    ref = ScriptedReference([3.0], nominal_ms=2.0)  # calibrated at 2 ms, but 3 ms in measuring context
    clock = Clock(ref)
    table = build_table(units, clock, clock.provenance(), path, progress=False)
    assert table.nominal_ms() == pytest.approx(3.0)
    truth = {u.key: 0.05 + sum(p.numel() for p in u.make().parameters()) / 1000 for u in units}
    for key, ms in table.entries.items():  # entries are back in the machine's own milliseconds
        assert ms == pytest.approx(truth[key])
    saved = LatencyTable.load(path)
    assert saved.nominal_ms() == pytest.approx(3.0) and saved.entries == pytest.approx(table.entries)


def test_an_interrupted_normalised_build_resumes_at_its_own_nominal_speed(tmp_path):
    units = list(enumerate_units(SPEC, HW, (0.5,), (0.5,)))[:20]
    path = tmp_path / "t.json"

    class Stops(Clock):
        def measure(self, module, shapes, warmup=None, repeats=None):
            if self.calls >= 7:
                raise KeyboardInterrupt
            return super().measure(module, shapes)

    first = Stops(ScriptedReference([3.0], nominal_ms=2.0))
    with pytest.raises(KeyboardInterrupt):
        build_table(units, first, first.provenance(), path, progress=False, save_every=3)
    partial = LatencyTable.load(path)
    assert len(partial.entries) == 7 and partial.nominal_ms() == pytest.approx(3.0)
    # the resumed process calibrates differently, but measures at the partial table's nominal (as open_table does)
    again = Clock(ScriptedReference([5.0], nominal_ms=partial.nominal_ms()))
    table = build_table(units, again, again.provenance(), path, progress=False)
    truth = {u.key: 0.05 + sum(p.numel() for p in u.make().parameters()) / 1000 for u in units}
    assert again.calls == 13 and table.nominal_ms() == pytest.approx(3.0)
    for key, ms in table.entries.items():  # old and new entries on one scale: the machine's at 3 ms reference
        factor = 1.0 if key in partial.entries else 3.0 / 5.0
        assert ms == pytest.approx(truth[key] * factor)


def _signature(module: torch.nn.Module, shapes) -> tuple:
    return type(module).__name__, tuple(tuple(x) for x in shapes), sum(p.numel() for p in module.parameters())


def test_measurement_order_is_shuffled_per_round(tmp_path):
    units = list(enumerate_units(SPEC, HW, (0.5,), (0.5,)))[:12]
    seen: list[tuple] = []

    class Recorder(Clock):
        def measure(self, module, shapes, warmup=None, repeats=None):
            seen.append(_signature(module, shapes))
            return super().measure(module, shapes)

    rec = Recorder()
    build_table(units, rec, rec.provenance(), tmp_path / "t.json", progress=False, rounds=2)
    enumerated = [_signature(u.make(), u.shapes) for u in units]
    first, second = seen[:12], seen[12:]
    assert len(seen) == 24 and sorted(first) == sorted(enumerated) == sorted(second)
    assert first != enumerated and first != second  # a slow spell no longer hits a block of related units


def _priced_table(slowdown_at_build: float) -> LatencyTable:
    units = list(enumerate_units(SPEC, HW, (0.5,), (0.5,)))
    clock = Clock(slowdown=1.0)
    entries = {u.key: clock.measure(u.make(), list(u.shapes)) for u in units}
    # a correction fitted when whole networks ran `slowdown_at_build` times slower than now
    return LatencyTable(provenance=clock.provenance(), entries=entries,
                        correction={"scale": slowdown_at_build, "offset_ms": 0.0, "n": 4})


class NetworkClock(Clock):
    """Whole networks cost 1.2 × the sum of their units (framework overhead), times the current slowdown."""

    def __init__(self, table: LatencyTable, slowdown: float):
        super().__init__(slowdown=slowdown)
        self.table = table

    def measure(self, module, shapes, warmup=None, repeats=None):
        from nas.latency.units import record_unit_calls

        self.calls += 1
        return 1.2 * self.table.sum_ms(record_unit_calls(module.net, torch.zeros(shapes[0]))) * self.slowdown


def test_fresh_correction_measures_the_table_and_the_build_time_one_the_drift():
    table = _priced_table(slowdown_at_build=1.2 * 1.15)  # the machine was 15% slower at build time
    archs = random_networks(SPEC, 8, seed=1, stem_width=0.5, head_width=0.5)
    calib = random_networks(SPEC, 4, seed=10_001, stem_width=0.5, head_width=0.5)
    clock = NetworkClock(table, slowdown=1.0)
    report = validate(table, archs, clock, (1, 3, *HW), progress=False, rounds=2, calibration=calib)
    assert clock.calls == 2 * (8 + 4)  # calibration and validation networks timed in the same rounds
    assert report.kendall_tau == pytest.approx(1.0) and report.within_10 == 100
    assert report.mape == pytest.approx(0.0, abs=1e-6)
    assert report.correction["scale"] == pytest.approx(1.2)
    assert report.build_mape == pytest.approx(15.0, rel=1e-6) and report.build_within_10 == 0
    assert "build-time" in report.summary()
    rows = pd.DataFrame(report.rows())
    assert {"predicted_ms", "measured_ms", "raw_sum_ms", "error_pct", "predicted_build_correction_ms"} <= set(rows)
    assert report.repeat_tau == pytest.approx(1.0) and report.repeat_diff == pytest.approx(0.0)


class MoodyClock(NetworkClock):
    """A NetworkClock whose later rounds slow every other network down by 30%: the machine disagrees with
    itself, and no table could rank the networks better than the two halves rank each other."""

    def __init__(self, table: LatencyTable, per_round: int, rounds: int):
        super().__init__(table, slowdown=1.0)
        self.per_round, self.rounds = per_round, rounds

    def measure(self, module, shapes, warmup=None, repeats=None):
        i, r = self.calls % self.per_round, self.calls // self.per_round
        t = super().measure(module, shapes, warmup, repeats)
        return t * (1.3 if r >= self.rounds // 2 and i % 2 else 1.0)


def test_validation_reports_how_well_the_measurement_agrees_with_itself():
    table = _priced_table(slowdown_at_build=1.2)
    archs = random_networks(SPEC, 8, seed=1, stem_width=0.5, head_width=0.5)
    report = validate(table, archs, MoodyClock(table, per_round=8, rounds=4), (1, 3, *HW), progress=False, rounds=4)
    first, second = (np.asarray(h) for h in report.halves_ms)
    expected = 1.2 * np.asarray(report.raw_ms)
    np.testing.assert_allclose(first, expected)
    np.testing.assert_allclose(second, expected * np.where(np.arange(8) % 2, 1.3, 1.0))
    np.testing.assert_allclose(report.measured_ms, expected * np.where(np.arange(8) % 2, 1.15, 1.0))
    assert report.repeat_tau == pytest.approx(kendall_tau(list(first), list(second))) and report.repeat_tau < 1
    assert report.repeat_diff == pytest.approx(100 * 0.5 * (1 - 1 / 1.3))  # half the networks 0%, half 23%
    assert "against itself" in report.summary() and "bootstrap interval" in report.summary()
    rows = pd.DataFrame(report.rows())
    np.testing.assert_allclose(rows["measured_second_half_ms"], second)


def test_tau_interval_is_the_bootstrap_of_kendall_tau():
    rng = np.random.default_rng(3)
    x = np.linspace(40, 80, 30)
    y = x * (1 + 0.05 * rng.standard_normal(30))
    idx = np.random.default_rng(7).integers(0, 30, size=(1, 30))[0]  # the one resample n_boot=1 draws
    one = kendall_tau(list(x[idx]), list(y[idx]))  # ties from repeated networks count as in τ-b
    assert kendall_tau_interval(x, y, n_boot=1, seed=7) == pytest.approx((one, one))
    lo, hi = kendall_tau_interval(x, y)
    assert lo < kendall_tau(list(x), list(y)) < hi and hi - lo < 0.2
    assert kendall_tau_interval(x, y) == (lo, hi)  # seeded
    assert kendall_tau_interval(x, 2 * x) == (1.0, 1.0)
    assert all(np.isnan(kendall_tau_interval([1.0, 2.0], [1.0, 2.0])))


def test_validation_networks_span_the_latency_range():
    table = _priced_table(1.0)
    archs = random_networks(SPEC, 12, seed=1, stem_width=0.5, head_width=0.5)
    from nas.latency.units import record_unit_calls

    sums = [table.sum_ms(record_unit_calls(build_network(a, aux_heads=False), torch.zeros(1, 3, *HW)))
            for a in archs]
    widths = [{c.width for b in a.branches for c in b.cells[:-1]} for a in archs]
    assert all(w <= {0.5, 0.75} for w in widths[0::2]) and all(w <= {0.75, 1.0} for w in widths[1::2])
    narrow, wide = np.median(sums[0::2]), np.median(sums[1::2])
    assert wide > 1.3 * narrow
    assert kendall_tau(sums, sums) == pytest.approx(1.0)


@pytest.mark.slow
def test_build_then_validate_through_the_cli(tmp_path):
    sets = [f"latency.cache_dir={tmp_path / 'tables'}", "space.name=tiny", "latency.input_hw=[64,128]",
            "latency.repeats=2", "latency.warmup=1", "latency.rounds=1", "latency.calibrate=3",
            "latency.validate_n=4", "latency.validate_rounds=2", "latency.threads=1",
            f"data.root={tmp_path / 'data'}", f"run.root={tmp_path / 'runs'}"]
    flags = [x for s in sets for x in ("--set", s)]
    run = lambda *a: subprocess.run([sys.executable, "-m", "nas", "latency", *a, *flags],  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    res = run("build")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "correction fitted on 3 networks" in res.stdout
    table = LatencyTable.load(next((tmp_path / "tables").glob("torch-*.json")))
    assert table.provenance["normalised"] is True and table.nominal_ms() > 0
    assert list((tmp_path / "tables").glob("speed-reference-*.json"))
    res = run("validate", "--out", str(tmp_path / "val"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "4 networks: Kendall tau" in res.stdout and "build-time" in res.stdout
    frame = pd.read_csv(tmp_path / "val" / "latency_validation.csv")
    assert len(frame) == 4 and (frame["measured_ms"] > 0).all()
    assert (tmp_path / "val" / "latency_validation.png").stat().st_size > 0


def test_measuring_against_a_table_uses_its_scale(tmp_path):
    from nas.config import LatencyConfig
    from nas.latency.cache import backend_for_table, make_backend

    cfg = LatencyConfig(cache_dir=str(tmp_path), threads=1)
    raw = LatencyTable(provenance={"backend": "torch", "normalised": False}, entries={})
    assert backend_for_table(cfg, raw).reference is None  # a table of raw timings is validated raw
    scaled = LatencyTable(provenance={"backend": "torch", "normalised": True,
                                      "speed_reference": {"nominal_ms": 2.5}}, entries={})
    assert backend_for_table(cfg, scaled).reference.nominal_ms == 2.5
    lazy = make_backend(cfg, "cpu")  # no nominal yet: calibrated on first use, then kept for later processes
    assert lazy.reference.nominal_ms is None and not list(tmp_path.glob("speed-reference-*.json"))
    lazy.measure(torch.nn.Conv2d(3, 4, 3), [(1, 3, 16, 16)], warmup=1, repeats=1)
    assert lazy.reference.nominal_ms > 0 and len(list(tmp_path.glob("speed-reference-*.json"))) == 1
    assert make_backend(cfg, "cpu").reference.nominal_ms == pytest.approx(lazy.reference.nominal_ms)


def test_onnxruntime_exports_a_network_once_for_many_rounds(monkeypatch):
    pytest.importorskip("onnxruntime")
    from nas.latency.measure import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(threads=1, warmup=1, repeats=1)
    exports = []
    real = backend.session
    monkeypatch.setattr(backend, "session", lambda m, s: exports.append(1) or real(m, s))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    for _ in range(3):
        assert backend.measure(net, [(1, 3, 16, 16)]) > 0
    backend.measure(net, [(1, 3, 8, 8)])
    assert len(exports) == 2  # once per input shape, not once per round
