from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.config import SpaceConfig
from nas.latency.expected import ArchProbs
from search_spaces.fasterseg import Supernet, create_supernet
from search_spaces.ops import SlimOperator
from search_spaces.registry import list_spaces, space_spec

X_SHAPE = (1, 3, 64, 128)
SETS = ("student", "teacher")


def _net(name: str = "tiny", seed: int = 0, **kw) -> Supernet:
    torch.manual_seed(seed)
    return Supernet(space_spec(name), 5, **kw)


def _loss(out: dict[str, torch.Tensor], seed: int = 1) -> torch.Tensor:
    target = torch.randint(0, 5, (X_SHAPE[0], *X_SHAPE[2:]), generator=torch.Generator().manual_seed(seed))
    return sum(F.cross_entropy(v, target) for k, v in out.items() if k.startswith("logits"))


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(X_SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list_spaces())
def registry_net(request) -> Supernet:
    return _net(request.param)


def test_every_registered_space_builds_and_steps(registry_net):
    """One sampled student step per registered space (FasterSeg's full space included, batch 1, 64×128)."""
    out = registry_net(_x(), "student", generator=torch.Generator().manual_seed(0))
    _loss(out).backward()
    assert out["logits"].shape == (1, 5, 64, 128)
    assert all(p.grad is not None for p in registry_net.arch_parameters("student"))
    registry_net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("mode", ["sampled", "mixed"])
@pytest.mark.parametrize("arch_set", SETS)
def test_forward_backward_outputs(mode, arch_set):
    net = _net(mode=mode)
    out = net(_x(), arch_set)
    sc = net.spec.scales
    expected = {"logits", "feat8", *(f"logits_{s}" for s in sc), *(f"logits_{sc[-1]}_{e}" for e in sc[:-1])}
    assert set(out) == expected
    for k, v in out.items():
        if k != "feat8":
            assert v.shape == (1, 5, 64, 128), k
    c8 = 2 * round(8 * net.spec.fch * net.head_width[arch_set])
    assert out["feat8"].shape == (1, c8, 8, 16)
    assert torch.equal(out["logits"], out["logits_32_16"])
    _loss(out).backward()
    grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch_set", SETS)
def test_sampled_mode_gives_every_arch_parameter_a_gradient(arch_set):
    net = _net()
    _loss(net(_x(), arch_set, generator=torch.Generator().manual_seed(2))).backward()
    names = dict(net.named_arch_parameters())
    kinds = {n.split(".")[2] for n in names if n.startswith(f"arch.{arch_set}.")}
    assert kinds == ({"alpha", "beta", "upsample"} if arch_set == "teacher" else {"alpha", "beta", "gamma", "upsample"})
    for name, p in names.items():
        if name.startswith(f"arch.{arch_set}."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_weight_and_arch_parameters_are_disjoint_and_complete():
    net = _net(shared_kernels=True)
    w = {id(p) for p in net.weight_parameters()}
    a = {id(p) for p in net.arch_parameters()}
    assert not (w & a)
    assert w | a == {id(p) for p in net.parameters()}
    assert len(net.arch_parameters("student")) + len(net.arch_parameters("teacher")) == len(a)
    with pytest.raises(ValueError, match="architecture set"):
        net.arch_parameters("tutor")


def _op_calls(net: Supernet, arch_set: str = "student", seed: int = 0) -> dict[str, int]:
    calls: dict[str, int] = {}
    handles = []
    for name, m in net.named_modules():
        if isinstance(m, SlimOperator):
            slot = name.split(".")[1]
            handles.append(m.register_forward_hook(lambda *_a, s=slot: calls.__setitem__(s, calls.get(s, 0) + 1)))
    net(_x(), arch_set, generator=torch.Generator().manual_seed(seed))
    for h in handles:
        h.remove()
    return calls


def test_sampled_mode_runs_only_reachable_chosen_ops():
    sampled, mixed = _net(mode="sampled"), _net(mode="mixed")
    calls_s, calls_m = _op_calls(sampled), _op_calls(mixed)
    assert sum(calls_s.values()) < sum(calls_m.values()) / 5
    assert all(v == 1 for v in calls_s.values())  # one op per slot
    n_ops = len(mixed.spec.ops)
    assert len(calls_m) == len(mixed.cells) and min(calls_m.values()) == n_ops
    # the slots run are exactly those the reachability pass from the heads asks for
    from search_spaces.fasterseg import _Sample

    smp = _Sample(sampled, "student", 1.0, torch.Generator().manual_seed(0))
    need = sampled.reachable(smp.beta_idx)
    assert set(calls_s) == {f"{layer}_{si}_{d}" for (layer, si), ds in need.items() for d in ds}
    assert len(calls_s) < len(sampled.cells)


def test_seeded_runs_are_deterministic():
    a = _net(seed=4)(_x(), "student", generator=torch.Generator().manual_seed(9))
    b = _net(seed=4)(_x(), "student", generator=torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(9)
    c = _net(seed=4)(_x(), "student")
    assert set(c) == set(a)


def test_shared_kernels_tie_conv_weights_and_save_parameters():
    plain, shared = _net(), _net(shared_kernels=True)
    ops = shared.cells["1_0_keep"]
    by_name = dict(zip(shared.spec.ops, ops))
    assert by_name["conv"].units[0].weight is by_name["zoomed_conv_2x"].units[0].weight
    assert by_name["conv_2x"].units[1].weight is by_name["zoomed_conv_2x"].units[1].weight
    n = lambda m: sum(p.numel() for p in m.weight_parameters())  # noqa: E731
    assert n(shared) < n(plain)
    _loss(shared(_x(), "teacher")).backward()


def test_fixed_upsampler_has_no_parameters_and_one_hot_probs():
    net = _net(upsample="pixel_shuffle")
    assert not any("upsample" in n for n, _ in net.named_arch_parameters())
    probs = net.arch_probs("student")
    assert torch.equal(probs["final_upsample"], torch.tensor([0.0, 1.0]))
    net(_x(), "student")


def test_arch_probs_layout_matches_latency_model():
    net = _net("tiny")
    L = net.L
    probs = net.arch_probs("student")
    assert len(probs["alpha"]) == L + (L - 1) + (L - 2)
    assert set(probs["beta"]) == {(layer, si) for si in (1, 2) for layer in range(si + 1, L)}
    assert set(probs["gamma"]) == {(layer, si) for si in range(3) for layer in range(max(1, si), L)}
    assert set(probs["upsample"]) == {(16, 0), (32, 0), (32, 1)}
    for group in ("alpha", "beta", "gamma", "upsample"):
        for v in probs[group].values():
            assert torch.isclose(v.sum(), torch.tensor(1.0))
    ArchProbs(**probs)
    teacher = net.arch_probs("teacher")["gamma"][(1, 0)]
    assert teacher.argmax() == len(net.spec.widths) - 1 and teacher.max() == 1


def test_create_supernet_from_config():
    net = create_supernet(SpaceConfig(name="tiny", mode="mixed", branches="32,8", upsample="bilinear"), 3)
    assert net.mode == "mixed" and net.main_branches == (32, 8) and net.spec.num_classes == 3
    out = net(_x(), "teacher")
    assert torch.equal(out["logits"], out["logits_32_8"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode"):
        _net(mode="dense")
    with pytest.raises(ValueError, match="upsample"):
        _net(upsample="nearest")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_choices(monkeypatch):
    # cuDNN convolutions default to TF32 on Ampere and later: 1e-3 apart from CPU float32 on an H200 (seen there)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    net = _net()
    cpu = net(_x(), "student", generator=torch.Generator().manual_seed(1))
    net.cuda()
    gpu = net(_x().cuda(), "student", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cpu["logits"], gpu["logits"].cpu(), atol=1e-3)


def test_fusion_skips_are_where_the_route_leaves_the_finer_scale():
    """A single path's refine chains read the feature where the route left the finer scale (the stem output
    when it left 1/8 at layer 0), as the derived network does, not the last layer's output there: with the
    last layer's, every route's detail passed through the whole 1/8 trellis and the path learnt a different,
    much deeper network than the one derived."""
    net = _net().eval()
    p = net.arch["student"]
    with torch.no_grad():
        for b in p.beta:
            b.zero_()
            b[:, 0] = 30.0  # keep: the 1/32 route leaves 1/8 at layer 0 and 1/16 at layer 1
        p.beta[0][1] = torch.tensor([0.0, 30.0])  # node (3, 1) comes down from (2, 0): 1/16 leaves 1/8 there
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, index: int = 0):
        def hook(module, args) -> None:  # a pre-hook that returned a value would replace the arguments
            seen.setdefault(name, args[index])
        return hook

    net.stems["student"].register_forward_hook(lambda m, args, out: seen.setdefault("stem", out))
    for op in net.cells["2_0_down"]:
        op.register_forward_pre_hook(keep("leave8_16"))
    net.heads["student"].chains["16"][0].register_forward_pre_hook(keep("skip16_8", 1))
    net.heads["student"].chains["32"][1].register_forward_pre_hook(keep("skip32_8", 1))
    with torch.no_grad():
        net(_x(), "student", argmax=True)
    assert torch.equal(seen["skip32_8"], seen["stem"])
    assert torch.equal(seen["skip16_8"], seen["leave8_16"])
    assert not torch.equal(seen["skip16_8"], seen["stem"])
