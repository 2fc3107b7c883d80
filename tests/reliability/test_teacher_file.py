"""A teacher model file is checked against the dataset it is used with before any work: other class names, another
dataset version, a truncated file are one line and exit 2 (`nas train --teacher`, `nas run --teacher`); the shipped
teacher loads and matches the embedded dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.config import DataConfig
from nas.data import dataset_info, dataset_version
from nas.models import save_model
from search_spaces.hrnet import build_hrnet

SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "teachers" / "digit_scenes_hrnet_w18s.pt"


def _teacher(path: Path, class_names=None, version: str | None = None) -> Path:
    info = dataset_info(DataConfig())
    torch.manual_seed(0)
    meta = {"dataset": "digit_scenes", "dataset_version": version or dataset_version(DataConfig())}
    return save_model(path, build_hrnet("tiny", info.num_classes), "hrnet", info.num_classes,
                      hrnet={"preset": "tiny"}, class_names=class_names or info.class_names, palette=info.palette,
                      input_hw=(64, 128), meta=meta)


def _train(nas_cli, work, run_root: Path, teacher: Path):
    return nas_cli("train", *work.sets(run_root), "--arch", str(work.arch0), "--teacher", str(teacher),
                   "--kd", "pixel")


@pytest.mark.parametrize("case,fragment", [
    ("classes", "was trained on other classes: its class 3 is 'two'"),
    ("version", "was trained on dataset version digit_scenes-v1"),
    ("truncated", "teacher.pt"),
])
def test_a_mismatched_or_broken_teacher_is_refused_before_any_work(case, fragment, work, nas_cli, refused,
                                                                    tmp_path):
    path = tmp_path / "teacher.pt"
    if case == "classes":
        names = list(dataset_info(DataConfig()).class_names)
        names[3] = "two"
        _teacher(path, class_names=names)
    elif case == "version":
        _teacher(path, version="digit_scenes-v1")
    else:
        data = _teacher(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    res = _train(nas_cli, work, tmp_path / "runs", path)
    refused(res, fragment)
    assert not (tmp_path / "runs").exists()


def test_the_shipped_teacher_matches_the_embedded_dataset():
    from nas.trainer.chain import load_teacher

    cfg = DataConfig()
    info = dataset_info(cfg)
    model, meta = load_teacher(SHIPPED, info.num_classes, class_names=info.class_names,
                               dataset_version=dataset_version(cfg))
    assert meta["model_kind"] == "hrnet" and meta["meta"]["val_miou"] > 0.75
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    assert SHIPPED.with_suffix(".md").is_file()  # the model card beside it
