"""The tutor: the student's network plus a high-resolution stream; shapes, parameter budget, the extra path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search_spaces.builder import build_network
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec
from search_spaces.tutor import TUTOR_PATHS, build_tutor, stem_split

HW = (64, 128)


def _arch(branches=(32, 16), seed=0):
    return random_architecture(space_spec("tiny", num_classes=5), np.random.default_rng(seed), branches=branches)


def _count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("path", TUTOR_PATHS)
@pytest.mark.parametrize("branches", [(32, 16), (32, 8)])
def test_shapes_train_and_eval(path, branches):
    torch.manual_seed(0)
    arch = _arch(branches)
    tutor = build_tutor(arch, path=path)
    student = build_network(arch)
    x = torch.randn(2, 3, *HW)
    out = tutor.train()(x)
    ref = student.train()(x)
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].shape == ref[k].shape, k
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in tutor.extra_parameters())
    tutor.eval()
    with torch.no_grad():
        ev = tutor(x)
    assert set(ev) == {"logits", "logits8", "feat8"}
    assert ev["logits"].shape == (2, 5, *HW)


@pytest.mark.parametrize("path", TUTOR_PATHS)
def test_main_path_keeps_the_students_parameters(path):
    arch = _arch()
    tutor = build_tutor(arch, path=path)
    student = build_network(arch)
    n_student = _count(student.parameters())
    n_main = _count(tutor.main_parameters())
    n_extra = _count(tutor.extra_parameters())
    assert n_main == n_student
    assert n_extra > 0
    assert _count(tutor.parameters()) == n_student + n_extra
    # the main path is the student's module tree: its weights load into a student as they are
    student.load_state_dict(tutor.main.state_dict())
    print(f"tutor path 1/{path}: student {n_student} params, tutor {n_student + n_extra} "
          f"(+{n_extra}, {100 * n_extra / n_student:.1f}%)")


@pytest.mark.parametrize("path", TUTOR_PATHS)
def test_extra_path_runs_at_its_resolution(path):
    arch = _arch()
    tutor = build_tutor(arch, path=path).eval()
    seen: dict[str, torch.Size] = {}

    def record(module, inputs, output) -> None:
        seen["hr"] = output.shape

    tutor.hr_path.register_forward_hook(record)
    with torch.no_grad():
        tutor(torch.randn(1, 3, *HW))
    assert seen["hr"][-2:] == (HW[0] // path, HW[1] // path)
    assert seen["hr"][1] == tutor.hr_channels


def test_stem_split_matches_the_stem():
    net = build_network(_arch()).eval()
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        x4, x8 = stem_split(net, x)
        assert torch.equal(x8, net.stem(x))
    assert x4.shape[-2:] == (HW[0] // 4, HW[1] // 4)


def test_bad_path_raises():
    with pytest.raises(ValueError, match="tutor path"):
        build_tutor(_arch(), path=16)
