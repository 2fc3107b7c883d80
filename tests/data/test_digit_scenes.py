"""Digit scenes: determinism, disjoint digit pools, label/size maps, the on-disk cache, loaders, weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from nas.config import DataConfig
from nas.data import build_dataset, build_loader, class_frequencies, class_weights, colorize, dataset_info
from nas.data import digit_scenes as ds
from nas.errors import UserError

SIZE = (64, 128)


def _cfg(root, **kw) -> DataConfig:
    base = {"root": str(root), "image_size": SIZE, "num_train": 6, "num_val": 4, "batch_size": 2}
    base.update(kw)
    return DataConfig(**base)


def test_same_inputs_give_identical_arrays_across_fresh_datasets(tmp_path):
    a = build_dataset(_cfg(tmp_path / "a"), "train")
    b = build_dataset(_cfg(tmp_path / "b"), "train")
    for name in ("images", "labels", "sizes", "objects"):
        np.testing.assert_array_equal(getattr(a.arrays, name), getattr(b.arrays, name))
    image, label, size, _ = ds.generate_scene(0, "train", 3, SIZE)
    np.testing.assert_array_equal(a.arrays.images[3], image)
    np.testing.assert_array_equal(a.arrays.labels[3], label)
    np.testing.assert_array_equal(a.arrays.sizes[3], size)


def test_image_does_not_depend_on_split_count(tmp_path):
    small = build_dataset(_cfg(tmp_path, num_val=2), "val")
    large = build_dataset(_cfg(tmp_path, num_val=4), "val")
    np.testing.assert_array_equal(small.arrays.images, large.arrays.images[:2])


def test_different_seed_or_split_differs():
    base = ds.generate_scene(0, "train", 0, SIZE)[0]
    assert not np.array_equal(base, ds.generate_scene(1, "train", 0, SIZE)[0])
    assert not np.array_equal(base, ds.generate_scene(0, "val", 0, SIZE)[0])
    assert not np.array_equal(base, ds.generate_scene(0, "train", 1, SIZE)[0])


def test_train_and_val_digit_pools_are_disjoint_and_cover_all_digits():
    from sklearn.datasets import load_digits

    train, val = set(ds.digit_pools("train").tolist()), set(ds.digit_pools("val").tolist())
    assert not train & val
    assert len(train | val) == 1797
    target = load_digits().target
    assert set(target[sorted(val)].tolist()) == set(range(10))
    assert 0.15 < len(val) / 1797 < 0.25


def test_labels_and_size_maps_are_consistent():
    for i in range(6):
        image, label, size, objects = ds.generate_scene(0, "val", i, SIZE)
        assert image.dtype == label.dtype == size.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= set(range(11)) | {255}
        assert set(np.unique(size).tolist()) <= {0, 1, 2, 3}
        digit = (label >= 1) & (label <= 10)
        assert (size[digit] > 0).all() and (size[~digit] == 0).all()
        assert 2 <= len(objects) <= 7
        assert {c for c, _, _ in objects} <= set(range(1, 11))


def test_digit_sizes_vary_widely_at_default_size():
    heights, buckets = [], set()
    for i in range(20):
        _, _, size, objects = ds.generate_scene(0, "train", i, (128, 256))
        heights += [h for _, h, _ in objects]
        buckets |= set(np.unique(size).tolist())
    assert min(heights) <= 14 and max(heights) >= 90
    assert buckets == {0, 1, 2, 3}


def test_cache_is_reloaded_without_generating(tmp_path, monkeypatch):
    first = build_dataset(_cfg(tmp_path), "val")
    assert first.path.is_file()

    def boom(*args, **kwargs):
        raise AssertionError("generated again instead of loading the cache")

    monkeypatch.setattr(ds, "generate_split", boom)
    again = build_dataset(_cfg(tmp_path), "val")
    np.testing.assert_array_equal(first.arrays.images, again.arrays.images)
    np.testing.assert_array_equal(first.arrays.objects, again.arrays.objects)


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path, caplog):
    first = build_dataset(_cfg(tmp_path), "val")
    first.path.write_bytes(first.path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="nas.data.digit_scenes"):
        again = build_dataset(_cfg(tmp_path), "val")
    assert any("regenerating" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(first.arrays.labels, again.arrays.labels)
    assert np.load(again.path)["labels"].shape == (4, *SIZE)  # the rewritten file is whole


def test_item_format(tmp_path):
    item = build_dataset(_cfg(tmp_path), "train")[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, *SIZE)
    assert item["label"].dtype == torch.int64 and item["label"].shape == SIZE
    assert item["size"].dtype == torch.uint8 and item["size"].shape == SIZE
    assert item["index"] == 1
    assert -2.5 < float(item["image"].min()) < float(item["image"].max()) < 2.7  # ImageNet-normalised


def test_bad_split_and_count_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="test"):
        build_dataset(_cfg(tmp_path), "test")
    with pytest.raises(UserError, match="positive"):
        build_dataset(_cfg(tmp_path, num_train=0), "train")


def test_loader_is_seeded_and_drops_last_for_train(tmp_path):
    cfg = _cfg(tmp_path, num_train=5)
    first = [b["index"].tolist() for b in build_loader(cfg, "train", seed=3)]
    again = [b["index"].tolist() for b in build_loader(cfg, "train", seed=3)]
    other = [b["index"].tolist() for b in build_loader(cfg, "train", seed=4)]
    assert first == again and first != other
    assert len(first) == 2 and all(len(b) == 2 for b in first)
    val = [b["index"].tolist() for b in build_loader(cfg, "val", seed=3)]
    assert val == [[0, 1], [2, 3]]
    batch = next(iter(build_loader(cfg, "val")))
    assert batch["image"].shape == (2, 3, *SIZE) and batch["size"].shape == (2, *SIZE)


def test_class_weights_favour_digits_and_keep_loss_scale(tmp_path):
    train = build_dataset(_cfg(tmp_path), "train")
    freq, w = class_frequencies(train), class_weights(train)
    assert freq.shape == (11,) and abs(freq.sum() - 1) < 1e-9 and freq[0] > 0.5
    assert w.shape == (11,) and w.dtype == torch.float32
    assert float(w[0]) < float(w[1:].min())
    assert float((torch.from_numpy(freq).float() * w).sum()) == pytest.approx(1.0, rel=1e-5)
    med = class_weights(train, "median")
    assert float(med[0]) < float(w[0])  # median frequency balancing is the stronger of the two


def test_info_and_colorize():
    info = dataset_info(DataConfig())
    assert info.num_classes == 11 and len(info.class_names) == len(info.palette) == 11
    assert info.size_buckets == ds.SIZE_BUCKETS and info.ignore_index == 255
    rgb = colorize(np.array([[0, 3, 255]]), info.palette)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == info.palette[3] and tuple(rgb[0, 2]) == (0, 0, 0)
