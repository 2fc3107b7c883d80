from __future__ import annotations

import json

import pytest
import torch

from search_spaces.arch import Architecture
from search_spaces.builder import build_network
from search_spaces.derive import best_route, derive, min_depth
from search_spaces.fasterseg import Supernet
from search_spaces.registry import list_spaces, space_spec

BIG = 10.0


def _net(name: str = "tiny", layers: int | None = None, seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    return Supernet(space_spec(name, layers=layers), 4)


def _randomise(net: Supernet, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _set_beta(net: Supernet, arch_set: str, node: tuple[int, int], choice: int) -> None:
    """Make node (layer, si) take input `choice` (0 keep, 1 down) with probability ≈ 1."""
    layer, si = node
    with torch.no_grad():
        row = net.arch[arch_set].beta[si - 1][layer - si - 1]
        row.copy_(torch.tensor([BIG, -BIG] if choice == 0 else [-BIG, BIG]))


def _set_alpha(net: Supernet, arch_set: str, logits: list[float], jitter: float = 0.0) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in net.arch[arch_set].alpha:
            a.copy_(torch.tensor(logits).expand_as(a) + jitter * torch.rand(a.shape, generator=g))


def _route_of(branch) -> list[int]:
    return [c.scale for c in branch.cells]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", list_spaces())
def test_derived_architecture_round_trips_builds_and_scripts(name):
    net = _net(name)
    _randomise(net, 3)
    for arch_set in ("student", "teacher"):
        arch = derive(net, arch_set)
        again = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))
        assert again == arch
        model = build_network(again).eval()
        x = torch.randn(1, 3, 64, 128)
        with torch.no_grad():
            eager = model(x)["logits"]
            scripted = torch.jit.script(model)(x)["logits"]
        assert eager.shape == (1, 4, 64, 128)
        assert torch.allclose(eager, scripted, atol=1e-5)


def test_hand_set_beta_forces_the_route():
    net = _net("tiny")  # L = 5
    for layer in range(2, 5):
        _set_beta(net, "student", (layer, 1), 0)
    _set_beta(net, "student", (3, 1), 1)  # enter 1/16 at layer 3 from (2, 1/8)
    _set_beta(net, "student", (4, 2), 1)  # 1/32 at layer 4 from (3, 1/16)
    _set_beta(net, "student", (3, 2), 0)
    probs = net.arch_probs("student")
    assert best_route(probs["beta"], 5, 1)[0] == [0, 0, 0, 1, 1]
    assert best_route(probs["beta"], 5, 2)[0] == [0, 0, 0, 1, 2]
    _set_alpha(net, "student", [0.0, 5.0, 0.0, 0.0, 0.0])  # conv everywhere: no skip removal
    with torch.no_grad():
        for g in net.arch["student"].gamma:
            g.copy_(torch.tensor([BIG, 0.0]).expand_as(g))  # narrowest width
    arch = derive(net, "student", branches="32,16")
    b32, b16 = arch.branches
    assert _route_of(b32) == [8, 8, 8, 16, 32] and _route_of(b16) == [8, 8, 8, 16, 16]
    assert all(c.op == "conv" for c in b32.cells)
    assert [c.width for c in b16.cells[:-1]] == [0.5] * 4 and b16.cells[-1].width == pytest.approx(8 / 12)
    assert arch.meta["probabilities"]["route"]["1/16"] > 0.99


def test_auto_branch_pair_follows_route_confidence():
    net = _net("tiny")
    _set_beta(net, "student", (3, 1), 1)
    _set_beta(net, "student", (4, 2), 1)
    with torch.no_grad():
        net.arch["student"].beta[0][2].zero_()  # node (4, 1/16): a coin flip
    arch = derive(net, "student")
    assert [b.scale for b in arch.branches] == [32, 8]
    _set_beta(net, "student", (4, 1), 0)  # now as confident as the 1/32 route
    assert [b.scale for b in derive(net, "student").branches] == [32, 16]
    assert [b.scale for b in derive(net, "student", branches="32,8").branches] == [32, 8]


def test_all_skip_respects_minimum_depth():
    net = _net("tiny", layers=9)
    _set_alpha(net, "student", [5.0, 1.0, 0.0, 0.0, 0.0], jitter=0.5)
    arch = derive(net, "student", branches="32,8")
    b32, b8 = arch.branches
    assert len(b32.cells) == min_depth(9, 2) == 7
    assert len(b8.cells) == min_depth(9, 0) == 3
    assert arch.meta["at_min_depth"] == {"1/32": True, "1/8": True}
    assert arch.meta["min_depth"] == {"1/32": 7, "1/8": 3}
    build_network(arch)
    deeper = derive(net, "student", branches="32,8", min_depth_rule=False)
    assert len(deeper.branches[1].cells) == 1


def test_a_branch_is_never_all_skip_between_downsamples():
    net = _net("tiny", layers=9)
    _set_alpha(net, "student", [5.0, 1.0, 0.0, 0.0, 0.0], jitter=0.5)
    _set_beta(net, "student", (2, 1), 1)
    _set_beta(net, "student", (5, 2), 1)
    for layer in range(3, 9):
        _set_beta(net, "student", (layer, 1), 0)
    for layer in range(6, 9):
        _set_beta(net, "student", (layer, 2), 0)
    arch = derive(net, "student", branches="32,8", min_depth_rule=False)
    b32 = arch.branches[0]
    strides = b32.strides()
    downs = [i for i, s in enumerate(strides) if s == 2]
    assert len(downs) == 2
    for a, b in zip(downs, [*downs[1:], len(b32.cells)]):
        between = [c.op for c in b32.cells[a + 1:b]]
        assert between and any(op != "skip" for op in between), (a, b, between)
    # skips of the 1/8 prefix (before the first down) may all go
    assert b32.cells[0].op == "skip" and downs[0] == 0


def test_teacher_derives_full_width():
    net = _net("tiny")
    _randomise(net, 1)
    arch = derive(net, "teacher")
    assert arch.kind == "teacher" and arch.stem_width == 1.0 and arch.head_width == 1.0
    assert all(c.width == 1.0 for b in arch.branches for c in b.cells)


def test_derive_is_deterministic_and_rejects_unknown_pairs():
    net = _net("tiny")
    _randomise(net, 2)
    assert derive(net).to_dict() == derive(net).to_dict()
    with pytest.raises(ValueError, match="branches"):
        derive(net, branches="16,8")


OP_COST = {"skip": 0.0, "conv": 1.0, "conv_2x": 2.0, "zoomed_conv": 0.5, "zoomed_conv_2x": 1.0}


def _cost(arch: Architecture) -> float:
    """A stand-in for a latency table: per cell op cost × width × 8/scale, plus 1 per PixelShuffle upsampler."""
    cells = {(i, c) for b in arch.branches for i, c in enumerate(b.cells)}  # a shared prefix is paid once
    ups = [u for b in arch.branches for u in b.upsample] + [arch.final_upsample]
    return sum(OP_COST[c.op] * c.width * 8 / c.scale for _, c in cells) + sum(u == "pixel_shuffle" for u in ups)


def test_budgeted_derivation_keeps_the_routes_and_fits_the_budget():
    from search_spaces.derive import derive_within_budget

    net = _net("tiny", layers=6)
    _randomise(net, 5)
    with torch.no_grad():
        probs = net.arch_probs("student")
    kwargs = {"stem_width": net.stem_width["student"], "head_width": net.head_width["student"]}
    free = derive(net, "student")
    assert derive_within_budget(net.spec, probs, _cost, _cost(free) + 1, **kwargs) == \
        derive_within_budget(net.spec, probs, _cost, 1e9, **kwargs)  # within budget: untouched, no record
    budget = 0.6 * _cost(free)
    fitted = derive_within_budget(net.spec, probs, _cost, budget, **kwargs)
    assert _cost(fitted) <= budget and fitted.meta["budget"]["met"]
    assert fitted.meta["budget"]["most_probable_ms"] == pytest.approx(_cost(free))
    # the same routes: a cell turned skip may leave as depth, but the scales are visited alike
    assert [sorted(set(_route_of(b))) for b in fitted.branches] == [sorted(set(_route_of(b))) for b in free.branches]
    assert [b.cells[-1].scale for b in fitted.branches] == [b.cells[-1].scale for b in free.branches]
    assert fitted.meta["budget"]["moves"] >= 1 and fitted.meta["budget"]["log_prob_given_up"] >= 0
    floor = derive_within_budget(net.spec, probs, _cost, 0.0, **kwargs)
    assert not floor.meta["budget"]["met"] and _cost(floor) < _cost(fitted)
    for b in floor.branches:  # every cell at its cheapest: skip (free at any width) or the narrowest zoomed_conv
        assert all(c.op in ("skip", "zoomed_conv") for c in b.cells)
        assert all(c.width == 0.5 for c in b.cells[:-1] if c.op != "skip")  # the last cell has the head's width


def test_budgeted_derivation_gives_up_the_least_confident_choice_first():
    from search_spaces.derive import derive_within_budget

    net = _net("tiny", layers=6)
    _set_alpha(net, "student", [-BIG, 0.0, BIG, -BIG, -BIG])  # every cell confidently conv_2x
    with torch.no_grad():
        probs = net.arch_probs("student")
    free = derive(net, "student")
    node = next(iter(probs["alpha"]))  # except the stem-side node (0, 0): conv_2x or conv, nearly a toss-up
    probs["alpha"][node] = torch.tensor([0.0, 0.49, 0.51, 0.0, 0.0])
    fitted = derive_within_budget(net.spec, probs, _cost, _cost(free) - 0.5, stem_width=net.stem_width["student"],
                                  head_width=net.head_width["student"])
    assert fitted.meta["budget"]["moves"] == 1
    assert fitted.branches[0].cells[0].op == "conv" and fitted.meta["budget"]["met"]
    for fit_b, free_b in zip(fitted.branches, free.branches):  # (0, 0) starts both branches; nothing else moved
        assert fit_b.cells[0].op == "conv" and fit_b.cells[1:] == free_b.cells[1:]


def test_budgeted_derivation_grows_into_a_generous_budget_and_never_ends_above_it():
    from search_spaces.derive import derive_within_budget

    for seed in range(4):
        net = _net("tiny", layers=6)
        _randomise(net, seed)
        with torch.no_grad():
            probs = net.arch_probs("student")
        kwargs = {"stem_width": net.stem_width["student"], "head_width": net.head_width["student"]}
        free = derive(net, "student")
        for scale in (1.15, 1.4, 0.7):
            budget = scale * _cost(free)
            fitted = derive_within_budget(net.spec, probs, _cost, budget, fill=0.9, **kwargs)
            assert _cost(fitted) <= budget + 1e-9 and fitted.meta["budget"]["met"]
            assert _cost(fitted) >= 0.9 * budget, (seed, scale)  # the room is spent: within 10% below
        grown = derive_within_budget(net.spec, probs, _cost, 1.4 * _cost(free), fill=0.9, **kwargs)
        assert grown.meta["budget"]["grown"] >= 1
        assert [b.cells[-1].scale for b in grown.branches] == [b.cells[-1].scale for b in free.branches]
        assert derive_within_budget(net.spec, probs, _cost, 1.4 * _cost(free), **kwargs) == free  # fill off
