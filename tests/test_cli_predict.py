"""`nas predict` through the real CLI: colourised predictions and overlays at each image's own size; a missing
image is one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from nas.config import DataConfig
from nas.data import dataset_info
from nas.models import save_model
from search_spaces.builder import build_network
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec

pytestmark = pytest.mark.slow

HW = (64, 128)


def _nas(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd)


@pytest.fixture
def model_file(tmp_path):
    info = dataset_info(DataConfig())
    torch.manual_seed(0)
    arch = random_architecture(space_spec("tiny", num_classes=info.num_classes), np.random.default_rng(0))
    net = build_network(arch, aux_heads=False).eval()
    return save_model(tmp_path / "model.pt", net, "segnet", info.num_classes, arch=arch.to_dict(),
                      class_names=info.class_names, palette=info.palette, input_hw=HW)


def _png(path, h: int, w: int, seed: int):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_predict_writes_colourised_pngs_at_the_image_size(model_file, tmp_path):
    images = [_png(tmp_path / "a.png", 50, 70, 1), _png(tmp_path / "b.png", 96, 160, 2)]
    out = tmp_path / "pred"
    res = _nas(tmp_path, "predict", "--checkpoint", str(model_file), "--out", str(out), *map(str, images))
    assert res.returncode == 0, res.stderr
    palette = {tuple(c) for c in dataset_info(DataConfig()).palette}
    for src in images:
        size = Image.open(src).size
        pred, over = out / f"{src.stem}_pred.png", out / f"{src.stem}_overlay.png"
        assert str(pred) in res.stdout and str(over) in res.stdout
        with Image.open(pred) as p, Image.open(over) as o:
            assert p.size == size and o.size == size and p.mode == "RGB"
            colours = {tuple(c) for c in np.asarray(p).reshape(-1, 3)}
        assert colours <= palette  # every pixel is a class colour


def test_predict_missing_image_is_one_line_exit_2(model_file, tmp_path):
    res = _nas(tmp_path, "predict", "--checkpoint", str(model_file), str(tmp_path / "nope.png"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.png" in lines[0] and "Traceback" not in res.stderr
