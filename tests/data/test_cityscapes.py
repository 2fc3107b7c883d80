"""Cityscapes loader on a small fabricated tree in the real layout: id mapping, errors naming the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.config import DataConfig
from nas.data import build_dataset, build_loader, dataset_info
from nas.data import cityscapes as cs
from nas.errors import UserError

H, W = 16, 32
# label ids → expected train ids: road, car, unlabeled, parking (ignored), bicycle, ego vehicle
IDS = {7: 0, 26: 13, 0: 255, 9: 255, 33: 18, 1: 255}


def _ids_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(list(IDS), size=(H, W)).astype(np.uint8)


def _write_pair(root: Path, split: str, city: str, name: str, ids: np.ndarray, size=(H, W)) -> tuple[Path, Path]:
    img = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    lab = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    lab.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(len(name)).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img)
    Image.fromarray(ids, mode="L").save(lab)
    return img, lab


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "cityscapes"
    for k, (split, city) in enumerate([("train", "aachen"), ("train", "aachen"), ("train", "bremen"),
                                       ("val", "frankfurt"), ("test", "berlin")]):
        _write_pair(root, split, city, f"{city}_{k:06d}_000019", _ids_map(k))
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = {"name": "cityscapes", "root": str(root), "image_size": (H, W), "batch_size": 2}
    return DataConfig(**{**base, **kw})


def _index(ds, label: Path) -> int:
    return [lab for _, lab in ds.pairs].index(label)


def test_official_table():
    assert len(cs.LABELS) == 35
    assert cs.NUM_CLASSES == len(cs.CLASS_NAMES) == len(cs.PALETTE) == 19
    assert cs.CLASS_NAMES[:3] == ("road", "sidewalk", "building") and cs.CLASS_NAMES[-1] == "bicycle"
    assert cs.PALETTE[0] == (128, 64, 128) and cs.PALETTE[13] == (0, 0, 142)
    mapped = {i: int(cs.ID_TO_TRAIN_ID[i]) for i in range(34)}
    assert sorted(v for v in mapped.values() if v != 255) == list(range(19))
    assert (cs.ID_TO_TRAIN_ID[34:] == -1).all()


def test_ids_map_to_train_ids_and_ignore_is_kept(tree):
    ds = build_dataset(_cfg(tree), "val")
    assert len(ds) == 1
    item = ds[0]
    expected = np.vectorize(IDS.get)(_ids_map(3))
    assert item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    assert (item["label"] == 255).any()
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert "size" not in item


def test_val_is_resized_to_image_size(tree):
    item = build_dataset(_cfg(tree, image_size=(8, 16)), "val")[0]
    assert item["image"].shape == (3, 8, 16) and item["label"].shape == (8, 16)
    assert set(item["label"].unique().tolist()) <= set(IDS.values())  # nearest: no blended ids


def test_train_augmentation_is_reproducible(tree):
    ds = build_dataset(_cfg(tree, image_size=(12, 24), scale_range=(0.5, 2.0)), "train")
    assert ds.augment and len(ds) == 3
    a, b, c = ds[(1, 123)], ds[(1, 123)], ds[(1, 7)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["image"].shape == (3, 12, 24) and a["label"].shape == (12, 24)
    assert not torch.equal(a["image"], c["image"])
    batches = [b["label"] for b in build_loader(_cfg(tree, image_size=(12, 24)), "train", seed=1)]
    again = [b["label"] for b in build_loader(_cfg(tree, image_size=(12, 24)), "train", seed=1)]
    assert len(batches) == 1 and torch.equal(batches[0], again[0])


def test_check_root_counts_per_split_and_city(tree):
    summary = cs.check_root(tree)
    assert summary.counts == {"train": {"aachen": 2, "bremen": 1}, "val": {"frankfurt": 1}, "test": {"berlin": 1}}
    assert summary.total == 5 and summary.image_sizes == ((H, W),)
    assert cs.check_root(tree, ["val"]).total == 1


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=str(missing)):
        cs.check_root(missing)
    with pytest.raises(UserError, match=str(missing)):
        build_dataset(_cfg(missing), "train")


def test_missing_split_folder(tree):
    import shutil

    shutil.rmtree(tree / "gtFine" / "val")
    with pytest.raises(UserError, match=str(tree / "gtFine" / "val")):
        build_dataset(_cfg(tree), "val")


def test_image_without_label(tree):
    _, lab = _write_pair(tree, "train", "bremen", "bremen_000099_000019", _ids_map(9))
    lab.unlink()
    with pytest.raises(UserError, match=str(lab)):
        build_dataset(_cfg(tree), "train")


def test_label_id_outside_table(tree):
    ids = _ids_map(0)
    ids[2, 3] = 40
    _, lab = _write_pair(tree, "val", "frankfurt", "frankfurt_000001_000019", ids)
    ds = build_dataset(_cfg(tree), "val")
    with pytest.raises(UserError, match=f"{lab}.*id 40"):
        ds[_index(ds, lab)]
    with pytest.raises(UserError, match=str(lab)):
        cs.check_root(tree, ["val"])


def test_image_label_size_mismatch(tree):
    _, lab = _write_pair(tree, "val", "frankfurt", "frankfurt_000002_000019", _ids_map(0))
    Image.fromarray(np.zeros((H, W + 2), dtype=np.uint8), mode="L").save(lab)
    with pytest.raises(UserError, match=str(lab)):
        cs.check_root(tree, ["val"])
    ds = build_dataset(_cfg(tree), "val")
    with pytest.raises(UserError, match=str(lab)):
        ds[_index(ds, lab)]


def test_info():
    info = dataset_info(_cfg(Path("unused")))
    assert info.name == "cityscapes" and info.num_classes == 19 and info.size_buckets == ()
    assert info.splits == ("train", "val", "test")
