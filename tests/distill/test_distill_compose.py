"""Composer, connectors and frozen teachers."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from nas.distill import (
    Connector,
    DistillationCriterion,
    FrozenTeacher,
    KDTerm,
    create_kd_loss,
    freeze_teacher,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _outputs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    student = {
        "logits": torch.randn(2, 3, 8, 8, requires_grad=True),
        "feat8": torch.randn(2, 4, 4, 4, requires_grad=True),
    }
    teacher = {"logits": torch.randn(2, 3, 16, 16), "feat8": torch.randn(2, 6, 8, 8)}
    return student, teacher


# --------------------------------------------------------------------------- connectors


def test_connector_shapes_and_modes() -> None:
    x = torch.randn(2, 4, 5, 7)
    assert Connector(4, 6)(x, (10, 14)).shape == (2, 6, 10, 14)
    assert Connector(4, 6)(x).shape == (2, 6, 5, 7)
    auto = Connector(4, 4, mode="auto")
    assert auto.mode == "identity" and not list(auto.parameters())
    assert torch.equal(auto(x), x)
    assert Connector(4, 4).mode == "conv1x1" and list(Connector(4, 4).parameters())
    with pytest.raises(ValueError, match="identity connector"):
        Connector(4, 6, mode="identity")
    with pytest.raises(ValueError, match="mode"):
        Connector(4, 6, mode="conv3x3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        Connector(4, 6)(torch.randn(2, 5, 3, 3))


# --------------------------------------------------------------------------- composer


def test_kd_term_labels_and_validation() -> None:
    assert KDTerm("pixel").label == "pixel_logits"
    assert KDTerm("pairwise", "feat8", "feat16").label == "pairwise_feat8_feat16"
    assert KDTerm("feature", "feat8", "feat8").connector_mode == "auto"
    assert KDTerm("pixel").connector_mode is None
    assert KDTerm("cwd", "feat8", connector="conv1x1").connector_mode == "conv1x1"
    with pytest.raises(ValueError, match="unknown KD loss"):
        KDTerm("nope")
    with pytest.raises(ValueError, match="weight"):
        KDTerm("pixel", weight=-1.0)
    with pytest.raises(ValueError, match="no '.'"):
        KDTerm("pixel", name="a.b")
    with pytest.raises(ValueError, match="unique"):
        DistillationCriterion([KDTerm("pixel"), KDTerm("pixel")])


def test_criterion_sums_weighted_terms_and_reports_each() -> None:
    terms = [
        KDTerm("pixel", weight=2.0),
        KDTerm("cwd", weight=3.0),
        KDTerm("feature", "feat8", "feat8", weight=0.5),
        KDTerm("pairwise", "feat8", "feat8", weight=1.0, kwargs={"pool": 1}),
    ]
    student, teacher = _outputs()
    crit = DistillationCriterion(terms).build({k: v.shape for k, v in student.items()}, teacher)
    assert set(crit.connectors) == {"feature_feat8"}
    assert {id(p) for p in crit.student_parameters()} == {id(p) for p in crit.connectors.parameters()}
    mask = torch.randint(0, 3, (2, 32, 32))
    mask[:, :8] = 255
    total, values = crit(student, teacher, mask=mask)
    assert set(values) == {"pixel_logits", "cwd_logits", "feature_feat8", "pairwise_feat8"}

    connected = crit.connectors["feature_feat8"](student["feat8"], (8, 8))
    expected = {
        "pixel_logits": create_kd_loss("pixel")(student["logits"], teacher["logits"], mask=mask),
        "cwd_logits": create_kd_loss("cwd")(student["logits"], teacher["logits"]),
        "feature_feat8": create_kd_loss("feature")(connected, teacher["feat8"]),
        "pairwise_feat8": create_kd_loss("pairwise", pool=1)(student["feat8"], teacher["feat8"]),
    }
    for name, value in expected.items():
        assert values[name].item() == pytest.approx(value.item(), rel=1e-6)
        assert not values[name].requires_grad
    weighted = 2 * expected["pixel_logits"] + 3 * expected["cwd_logits"] + 0.5 * expected["feature_feat8"]
    weighted = weighted + expected["pairwise_feat8"]
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)
    total.backward()
    assert student["logits"].grad is not None and student["feat8"].grad is not None
    assert all(p.grad is not None for p in crit.student_parameters())


def test_criterion_schedule_switches_terms() -> None:
    terms = [
        KDTerm("pixel", weight=1.0, warmup_epochs=2, start_epoch=1),
        KDTerm("cwd", weight=1.0, stop_epoch=1),
    ]
    crit = DistillationCriterion(terms)
    student, teacher = _outputs()
    total0, v0 = crit(student, teacher, epoch=0)
    assert v0["pixel_logits"].item() == 0.0 and total0.item() == pytest.approx(v0["cwd_logits"].item())
    total1, v1 = crit(student, teacher, epoch=1, progress=1.0)
    assert v1["cwd_logits"].item() == 0.0
    assert total1.item() == pytest.approx(0.5 * v1["pixel_logits"].item())
    assert crit.factors(2) == {"pixel_logits": 0.5, "cwd_logits": 0.0}
    assert crit.factors(3) == {"pixel_logits": 1.0, "cwd_logits": 0.0}


def test_criterion_lazy_build_warns(caplog: pytest.LogCaptureFixture) -> None:
    crit = DistillationCriterion([KDTerm("feature", "feat8", "feat8")])
    assert not crit.built
    student, teacher = _outputs()
    with caplog.at_level(logging.WARNING, logger="nas.distill.compose"):
        total, _ = crit(student, teacher)
    assert crit.built and "build()" in caplog.text
    assert total.dim() == 0


def test_criterion_explicit_connector_and_errors() -> None:
    conn = Connector(4, 6, mode="conv1x1")
    crit = DistillationCriterion([KDTerm("feature", "feat8", "feat8")], connectors={"feature_feat8": conn})
    assert crit.built and crit.connectors["feature_feat8"] is conn
    with pytest.raises(ValueError, match="unknown KD terms"):
        DistillationCriterion([KDTerm("pixel")], connectors={"other": conn})
    student, teacher = _outputs()
    with pytest.raises(ValueError, match="reads student output 'aux16'"):
        DistillationCriterion([KDTerm("pixel", "aux16")])(student, teacher)
    adv = DistillationCriterion(
        [KDTerm("holistic", weight=0.1, kwargs={"num_classes": 3, "width": 4, "depth": 1})]
    )
    with pytest.raises(ValueError, match="image"):
        adv(student, teacher)


def test_criterion_holistic_term_and_discriminator_step() -> None:
    term = KDTerm("holistic", weight=0.1, kwargs={"num_classes": 3, "width": 4, "depth": 1})
    crit = DistillationCriterion([term, KDTerm("pixel")])
    student, teacher = _outputs()
    image = torch.randn(2, 3, 32, 32)
    logs = crit.discriminator_step(image, student, teacher)
    assert set(logs) == {f"holistic_logits/{k}" for k in ("d_loss", "d_real", "d_fake", "gp", "wasserstein")}
    total, values = crit(student, teacher, image=image)
    total.backward()
    assert student["logits"].grad is not None
    disc = crit.losses["holistic_logits"].discriminator
    assert all(
        p.grad is None for p in disc.parameters()
    )  # cleared after its step, untouched by the student term
    assert not list(crit.student_parameters())  # the critic belongs to its own optimiser


# --------------------------------------------------------------------------- frozen teacher


def test_frozen_teacher_stays_in_eval_and_gets_no_grads() -> None:
    teacher_net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    parent = nn.ModuleDict(
        {
            "student": nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
            "teacher": freeze_teacher(teacher_net),
        }
    )
    assert (
        isinstance(parent["teacher"], FrozenTeacher)
        and freeze_teacher(parent["teacher"]) is parent["teacher"]
    )
    parent.train()
    assert parent["student"].training
    assert not parent["teacher"].training and not any(m.training for m in teacher_net.modules())
    stats = teacher_net[1].running_mean.clone()
    out = parent["teacher"](torch.randn(2, 3, 8, 8))
    assert not out.requires_grad
    assert torch.equal(teacher_net[1].running_mean, stats)  # BatchNorm in eval: statistics untouched
    assert not any(p.requires_grad for p in teacher_net.parameters())
    parent.train(True)
    assert not teacher_net[1].training
