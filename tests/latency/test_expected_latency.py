"""The differentiable expected latency against brute-force enumeration of derived networks, and its gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nas.latency.expected import ArchProbs, ExpectedLatency, latency_loss
from nas.latency.table import LatencyTable
from nas.latency.units import architecture_unit_keys, enumerate_units, record_unit_calls
from search_spaces.arch import Architecture, Branch, Cell, SpaceSpec
from search_spaces.builder import build_network
from search_spaces.random_arch import random_architecture

SPEC = SpaceSpec(name="t", layers=4, fch=2, ops=("conv", "zoomed_conv"), widths=(0.5, 1.0), num_classes=3)
HW = (64, 128)
STEM, HEAD = 1.0, 1.0


def _table(spec: SpaceSpec = SPEC) -> LatencyTable:
    """A synthetic table: distinct, deterministic entries (no clock involved)."""
    units = enumerate_units(spec, HW, (STEM,), (HEAD,))
    rng = np.random.default_rng(0)
    return LatencyTable(provenance={}, entries={u.key: float(rng.uniform(0.1, 2.0)) for u in units})


def _logits(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _params(seed: int = 0):
    """Architecture logits in ArchProbs' layout for a single branch ending at 1/32 (L = 4)."""
    L, S = SPEC.layers, len(SPEC.scales)
    alpha = {(ly, s): _logits(len(SPEC.ops), seed + 10 * ly + s) for ly in range(L) for s in range(S) if ly >= s}
    beta = {(ly, s): _logits(2, seed + 100 + 10 * ly + s) for ly in range(L) for s in range(1, S) if ly > s}
    gamma = {(ly, s): _logits(len(SPEC.widths), seed + 200 + 10 * ly + s) for ly in range(1, L) for s in range(S) if ly >= s}
    for t in (*alpha.values(), *beta.values(), *gamma.values()):
        t.requires_grad_(True)
    return alpha, beta, gamma


def _probs(alpha, beta, gamma) -> ArchProbs:
    sm = lambda d: {k: v.softmax(-1) for k, v in d.items()}  # noqa: E731
    one = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return ArchProbs(sm(alpha), sm(beta), sm(gamma), {(32, 0): one, (32, 1): one}, one)


def _routes():
    """All scale-index routes of 4 layers from 1/8 to 1/32 with their β probabilities."""
    for downs in itertools.combinations(range(1, 4), 2):
        route = [0]
        for layer in range(1, 4):
            route.append(route[-1] + (layer in downs))
        yield route


def _route_prob(route, probs: ArchProbs):
    p = torch.ones((), dtype=torch.float64)
    for layer in range(1, 4):
        si = route[layer]
        if si >= 1 and layer > si:
            p = p * probs.beta[(layer, si)][1 if route[layer - 1] < si else 0]
    return p


def test_expected_latency_equals_brute_force_over_derived_networks():
    table = _table()
    alpha, beta, gamma = _params()
    probs = _probs(alpha, beta, gamma)
    model = ExpectedLatency(table, SPEC, HW, STEM, HEAD, branches=(32,))
    expected = model(probs)

    brute = torch.zeros((), dtype=torch.float64)
    scales = SPEC.scales
    for route in _routes():
        pr = _route_prob(route, probs)
        for ops in itertools.product(range(len(SPEC.ops)), repeat=4):
            po = torch.stack([probs.alpha[(layer, route[layer])][ops[layer]] for layer in range(4)]).prod()
            for ws in itertools.product(range(len(SPEC.widths)), repeat=3):
                pw = torch.stack([probs.gamma[(layer, route[layer])][ws[layer - 1]] for layer in range(1, 4)]).prod()
                cells = tuple(
                    Cell(scale=scales[route[i]], op=SPEC.ops[ops[i]],
                         width=SPEC.widths[ws[i]] if i < 3 else HEAD)
                    for i in range(4)
                )
                arch = Architecture(space=SPEC, branches=(Branch(cells, ("bilinear", "bilinear")),),
                                    stem_width=STEM, head_width=HEAD)
                net = build_network(arch, aux_heads=False)
                ms = table.sum_ms(record_unit_calls(net, torch.zeros(1, 3, *HW)))
                brute = brute + pr * po * pw * ms
    assert expected.item() == pytest.approx(brute.item(), rel=1e-9)


def test_gradients_match_finite_differences():
    table = _table()
    alpha, beta, gamma = _params(seed=3)
    model = ExpectedLatency(table, SPEC, HW, STEM, HEAD, branches=(32, 16))
    value = model(_probs(alpha, beta, gamma))
    value.backward()
    eps = 1e-6
    for group in (alpha, beta, gamma):
        key = sorted(group)[len(group) // 2]
        for i in range(group[key].numel()):
            with torch.no_grad():
                group[key][i] += eps
                up = model(_probs(alpha, beta, gamma)).item()
                group[key][i] -= 2 * eps
                down = model(_probs(alpha, beta, gamma)).item()
                group[key][i] += eps
            assert group[key].grad[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_one_hot_probabilities_give_the_exact_table_latency_of_that_network():
    table = _table()
    arch = random_architecture(SPEC, np.random.default_rng(5), branches=(32,), stem_width=STEM, head_width=HEAD,
                               upsample="bilinear")
    cells = arch.branches[0].cells
    if len(cells) != SPEC.layers:
        pytest.skip("the random route is shorter than the trellis (skip cells removed)")
    net = build_network(arch, aux_heads=False)
    exact = table.sum_ms(record_unit_calls(net, torch.zeros(1, 3, *HW)))
    route = [SPEC.scales.index(c.scale) for c in cells]
    hot = lambda n, i: torch.nn.functional.one_hot(torch.tensor(i), n).double()  # noqa: E731
    alpha = {(ly, s): hot(len(SPEC.ops), SPEC.ops.index(cells[ly].op) if route[ly] == s else 0)
             for ly in range(4) for s in range(3) if ly >= s}
    beta = {(ly, s): hot(2, int(route[ly - 1] < s) if route[ly] == s else 0) for ly in range(4) for s in range(1, 3) if ly > s}
    gamma = {(ly, s): hot(2, SPEC.widths.index(cells[ly - 1].width) if route[ly] == s else 0)
             for ly in range(1, 4) for s in range(3) if ly >= s}
    one = torch.tensor([1.0, 0.0], dtype=torch.float64)
    probs = ArchProbs(alpha, beta, gamma, {(32, 0): one, (32, 1): one}, one)
    assert ExpectedLatency(table, SPEC, HW, STEM, HEAD, branches=(32,))(probs).item() == pytest.approx(exact)


def test_latency_losses():
    lat = torch.tensor(12.0, requires_grad=True)
    assert latency_loss(lat, 10.0, "hinge", weight=2.0).item() == pytest.approx(0.4)
    assert latency_loss(torch.tensor(8.0), 10.0, "hinge").item() == 0.0
    assert latency_loss(lat, 10.0, "mnas", exponent=2.0).item() == pytest.approx(1.44)
    latency_loss(lat, 10.0, "hinge").backward()
    assert lat.grad.item() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        latency_loss(lat, 0.0)


def test_recorded_keys_of_random_networks_are_all_enumerated():
    spec = SpaceSpec(name="t2", layers=6, fch=2, ops=("skip", "conv", "conv_2x", "zoomed_conv", "zoomed_conv_2x"),
                     widths=(0.5, 1.0), num_classes=3)
    keys = {u.key for u in enumerate_units(spec, HW, (0.5, 1.0), (0.5, 1.0))}
    rng = np.random.default_rng(0)
    for i in range(12):
        width = (0.5, 1.0)[i % 2]
        arch = random_architecture(spec, rng, stem_width=width, head_width=width)
        recorded = record_unit_calls(build_network(arch, aux_heads=False), torch.zeros(1, 3, *HW))
        assert set(recorded) <= keys, set(recorded) - keys


def test_keys_read_off_the_plan_are_those_a_forward_pass_records():
    """What the latency fit prices candidates with must be exactly what the network runs: every unit, shared
    prefixes once, both branch pairs, pixel-shuffle and bilinear fusions, student and teacher widths."""
    spec = SpaceSpec(name="t2", layers=6, fch=4, ops=("skip", "conv", "conv_2x", "zoomed_conv", "zoomed_conv_2x"),
                     widths=(0.5, 0.75, 1.0), num_classes=5)
    rng = np.random.default_rng(1)
    kinds = set()
    for i in range(24):
        width = (8 / 12, 1.0)[i % 2]
        arch = random_architecture(spec, rng, stem_width=width, head_width=width)
        recorded = record_unit_calls(build_network(arch, aux_heads=False), torch.zeros(1, 3, *HW))
        planned = architecture_unit_keys(arch, HW)
        assert sorted(planned) == sorted(recorded)
        kinds |= {k.split(":")[0] for k in planned} | {tuple(b.cells[-1].scale for b in arch.branches)}
    assert {"stem", "op", "fusion", "ffm", "head", "up", (32, 16), (32, 8)} <= kinds
    table = LatencyTable(provenance={}, entries={k: float(len(k)) for k in recorded},
                         correction={"scale": 1.1, "offset_ms": 0.5})
    net = build_network(arch, aux_heads=False)
    assert table.predict_architecture(arch, (1, 3, *HW)) == pytest.approx(table.predict_model(net, (1, 3, *HW)))
    assert architecture_unit_keys(arch, (60, 128)) is None  # not a multiple of 1/32: sizes round in the network
