"""The dataset registry and the folder dataset (your own images and masks) on a fabricated tree: label values of
index / RGB / P-mode masks, reduce_zero_label, split files, class weights, loader batches, the classes file,
and `nas data check` through the real CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from folder_fixture import CLASSES, COLORS, SIZES, make_folder_dataset, write_classes
from PIL import Image

from nas.cli import main
from nas.config import ExperimentConfig, apply_overrides
from nas.data import (
    DATASETS,
    DatasetSpec,
    build_dataset,
    build_loader,
    check_data_config,
    check_dataset,
    class_frequencies,
    class_weights,
    dataset_info,
    register_dataset,
)
from nas.data.folder import default_palette, read_classes, read_mask
from nas.errors import ConfigError, UserError


def test_builtin_datasets_are_registered_and_a_duplicate_name_raises():
    assert {"digit_scenes", "cityscapes", "folder"} <= set(DATASETS.names())
    assert all(isinstance(DATASETS[n], DatasetSpec) for n in DATASETS)
    with pytest.raises(ValueError, match="dataset 'folder' is already registered"):
        @register_dataset("folder")
        class Again(DatasetSpec):
            pass
    assert type(DATASETS["folder"]).__name__ == "FolderSpec"


def test_a_registered_dataset_is_usable_by_name():
    from torch.utils.data import TensorDataset

    from nas.config import DataConfig
    from nas.data import DataReport, DatasetInfo

    @register_dataset("toy_for_test")
    class Toy(DatasetSpec):
        def info(self, cfg):
            return DatasetInfo("toy_for_test", 2, ("a", "b"), ((0, 0, 0), (9, 9, 9)), ("train",))

        def build(self, cfg, split, augment):
            return TensorDataset(torch.zeros(3, 1))

        def check(self, cfg, splits=None):
            return DataReport(self.info(cfg), cfg.root)

    try:
        cfg = DataConfig(name="toy_for_test", image_size=(32, 64))
        assert dataset_info(cfg).class_names == ("a", "b") and len(build_dataset(cfg, "train")) == 3
        check_data_config(cfg)
        assert check_dataset(cfg).ok
        with pytest.raises(UserError, match="toy_for_test has splits train, not 'val'"):
            build_dataset(cfg, "val")
    finally:
        DATASETS._items.pop("toy_for_test")  # leave the registry as the other tests expect it


def test_unknown_name_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"data\.name.*'imagenet'.*known: .*cityscapes.*digit_scenes.*folder"):
        apply_overrides(ExperimentConfig(), ["data.name=imagenet"])


def test_folder_options_are_type_checked_config_keys(folder_dataset):
    cfg = apply_overrides(ExperimentConfig(), [*folder_dataset.overrides(), "data.folder.mask_suffix=_L.png"])
    assert cfg.data.folder.mask_suffix == "_L.png" and cfg.data.folder.image_suffix == (".png", ".jpg", ".jpeg")
    with pytest.raises(ConfigError, match="data.folder.reduce_zero_label"):
        apply_overrides(ExperimentConfig(), ["data.folder.reduce_zero_label=maybe"])
    with pytest.raises(ConfigError, match="unknown config key 'data.folder.img_dir'"):
        apply_overrides(ExperimentConfig(), ["data.folder.img_dir=x"])


def test_info_uses_the_classes_file(folder_dataset):
    info = dataset_info(folder_dataset.data_config())
    assert info.name == "folder" and info.num_classes == 3 and info.class_names == CLASSES
    assert info.palette == COLORS and info.splits == ("train", "val") and info.ignore_index == 255


def test_items_hold_the_right_labels_for_index_rgb_and_p_masks(folder_dataset):
    tree = folder_dataset
    cfg = tree.data_config()
    classes = read_classes(tree.root / "classes.yaml")
    seen = set()
    for split in ("train", "val"):
        ds = build_dataset(cfg, split, augment=False)
        assert len(ds) == len(tree.names[split])
        for i, (img, mask) in enumerate(ds.pairs):
            name = img.stem
            np.testing.assert_array_equal(read_mask(mask, classes), tree.labels[(split, name)])
            image, label = ds.load(i)
            assert image.shape[:2] == label.shape and image.dtype == np.uint8
            seen.add(tree.kinds[(split, name)])
    assert seen == {"index", "rgb", "p"}
    assert len(tree.names["train"]) + len(tree.names["val"]) >= 30


def test_val_items_fit_and_pad_to_image_size_train_items_crop(folder_dataset):
    cfg = folder_dataset.data_config(image_size=(64, 128))
    val = build_dataset(cfg, "val")
    for i in range(2):  # one of each size
        item = val[i]
        assert item["image"].shape == (3, 64, 128) and item["label"].shape == (64, 128)
        assert item["label"].dtype == torch.int64
        assert set(item["label"].unique().tolist()) <= {0, 1, 2, 255}
    small = val[[k for k, (img, _) in enumerate(val.pairs) if Image.open(img).size == (96, 64)][0]]
    assert (small["label"][:, 96:] == 255).all()  # 64x96 fits as is, padded with ignore on the right
    train = build_dataset(cfg, "train")
    a, b = train[(3, 11)], train[(3, 11)]
    assert a["image"].shape == (3, 64, 128) and torch.equal(a["label"], b["label"])


def test_loader_batches_mixed_sizes(folder_dataset):
    cfg = folder_dataset.data_config(batch_size=4)
    for split in ("train", "val"):
        batch = next(iter(build_loader(cfg, split, seed=0)))
        assert batch["image"].shape == (4, 3, 64, 128) and batch["label"].shape == (4, 64, 128)
    assert len(list(build_loader(cfg, "val"))) == 2


def test_class_weights_from_label_counts(folder_dataset):
    ds = build_dataset(folder_dataset.data_config(), "train")
    expected = np.zeros(3, dtype=np.int64)
    for name in folder_dataset.names["train"]:
        expected += np.bincount(folder_dataset.labels[("train", name)].ravel(), minlength=256)[:3]
    np.testing.assert_array_equal(ds.label_counts(), expected)
    freq, w = class_frequencies(ds), class_weights(ds)
    assert freq.shape == (3,) and abs(freq.sum() - 1) < 1e-9
    assert w.shape == (3,) and float(w[2]) > float(w[0])  # the car is rarer than the background
    assert float((torch.from_numpy(freq).float() * w).sum()) == pytest.approx(1.0, rel=1e-5)


def test_reduce_zero_label(tmp_path):
    tree = make_folder_dataset(tmp_path / "d", n_train=6, n_val=3, reduce_zero_label=True)
    cfg = tree.data_config()
    assert cfg.folder.reduce_zero_label
    ds = build_dataset(cfg, "train", augment=False)
    for i, (img, _) in enumerate(ds.pairs):
        np.testing.assert_array_equal(ds.load(i)[1], tree.labels[("train", img.stem)])
    # the same index mask read without reduce_zero_label: the car is 3, out of range for 3 classes
    index_mask = next(m for (img, m) in ds.pairs if tree.kinds[("train", img.stem)] == "index")
    raw = np.array(Image.open(index_mask))
    assert raw.min() == 0 and raw.max() == 3
    with pytest.raises(UserError, match=r"has label 3, out of range for 3 classes \(0-2; 255 = ignore\)"):
        read_mask(index_mask, read_classes(tree.root / "classes.yaml"), reduce_zero_label=False)


def test_split_files_and_a_voc_like_layout(tmp_path):
    tree = make_folder_dataset(tmp_path / "voc", n_train=6, n_val=3, layout="voc")
    (tree.root / "ImageSets" / "Segmentation" / "val.txt").write_text("# comment\n\nval_000\nval_002\n")
    cfg = tree.data_config()
    assert cfg.folder.split_file == "ImageSets/Segmentation/{split}.txt"
    check_data_config(cfg)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val", augment=False)
    assert len(train) == 6 and [img.stem for img, _ in val.pairs] == ["val_000", "val_002"]
    assert all(img.suffix == ".jpg" for img, _ in val.pairs)
    np.testing.assert_array_equal(val.load(1)[1], tree.labels[("val", "val_002")])


def test_classes_file_forms(tmp_path):
    write_classes(tmp_path / "a", colors=False)
    c = read_classes(tmp_path / "a" / "classes.yaml")
    assert c.names == CLASSES and c.colors is None and c.ignore_index == 255
    assert default_palette(3)[1] == (128, 0, 0)  # VOC's colour map
    write_classes(tmp_path / "b", ignore_index=0, ignore_color=[255, 255, 255])
    c = read_classes(tmp_path / "b" / "classes.yaml")
    assert c.colors == COLORS and c.ignore_index == 0 and c.ignore_color == (255, 255, 255)
    bad = tmp_path / "bad.yaml"
    for text, message in [("classes: [a, a]\n", "appears twice"), ("[]\n", "non-empty list"),
                          ("classes: [a]\nignore: 3\n", "unknown key 'ignore'"),
                          ("classes: [{name: a, color: [1, 2]}]\n", "must be [r, g, b]"),
                          ("classes: [{name: a, color: [1, 2, 3]}, b]\n", "has no color but others do"),
                          ("classes: [a\n", "is not valid YAML")]:
        bad.write_text(text)
        with pytest.raises(UserError, match=message.replace("[", r"\[")):
            read_classes(bad)


def test_ignore_index_that_is_a_class_is_refused(folder_dataset):
    write_classes(folder_dataset.root, ignore_index=1)
    with pytest.raises(UserError, match="ignore_index 1 is also a class label"):
        dataset_info(folder_dataset.data_config())


def test_rgb_mask_with_an_unknown_colour_names_file_pixel_and_colour(folder_dataset):
    tree = folder_dataset
    name = next(n for n in tree.names["val"] if tree.kinds[("val", n)] == "rgb")
    mask = tree.mask_path("val", name)
    rgb = np.array(Image.open(mask))
    rgb[5, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(mask)
    ds = build_dataset(tree.data_config(), "val")  # structure is fine: built; the item is refused
    k = [m for _, m in ds.pairs].index(mask)
    with pytest.raises(UserError, match=rf"{mask}: pixel \(7, 5\) has color \(1, 2, 3\)"):
        ds[k]


def test_check_data_config(folder_dataset, tmp_path):
    cfg = folder_dataset.data_config()
    check_data_config(cfg)
    check_data_config(ExperimentConfig().data)
    for kw, message in [({"batch_size": 0}, "data.batch_size"), ({"workers": -1}, "data.workers"),
                        ({"image_size": (64, 100)}, "multiples of 32"), ({"scale_range": (2.0, 1.0)}, "scale_range"),
                        ({"root": str(tmp_path / "nowhere")}, "root not found")]:
        with pytest.raises(UserError, match=message):
            check_data_config(folder_dataset.data_config(**kw))
    (folder_dataset.root / "classes.yaml").unlink()
    with pytest.raises(UserError, match="classes file not found"):
        check_data_config(cfg)


def test_check_dataset_report(folder_dataset):
    report = check_dataset(folder_dataset.data_config())
    assert report.ok and report.counts == {"train": 24, "val": 8}
    assert set(report.sizes["train"]) == set(SIZES) and sum(report.sizes["train"].values()) == 24
    total = sum(lab.size for (s, _), lab in folder_dataset.labels.items() if s == "val")
    assert int(report.class_pixels["val"].sum()) + report.ignore_pixels["val"] == total


# --------------------------------------------------------------------------- nas data check (real CLI)


def test_nas_data_check_on_a_clean_tree(folder_dataset, capsys):
    code = main(["data", "check", *folder_dataset.set_flags()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train: 24 image/mask pairs OK" in out and "val: 8 image/mask pairs OK" in out
    assert "64x96 (12)" in out and "96x128 (12)" in out
    assert all(name in out for name in CLASSES) and "OK: 32 image/mask pairs in 2 split(s)" in out


def test_nas_data_check_on_a_broken_tree_lists_every_problem(folder_dataset, capsys):
    tree = folder_dataset
    mask = tree.mask_path("val", "val_001")
    mask.unlink()  # an image without its mask
    big = tree.mask_path("train", "train_004")
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8), mode="L").save(big)  # a size mismatch
    stray = tree.root / "masks" / "train" / "orphan.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(stray)  # a mask without its image
    code = main(["data", "check", *tree.set_flags()])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"mask missing for image {tree.image_path('val', 'val_001')}" in out
    assert f"mask {big} is 10x10" in out and f"image missing for mask {stray}" in out
    assert "train: 23 image/mask pairs OK" in out and "val: 7 image/mask pairs OK" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas data: error: 3 problems") and "first: train:" in lines[0]


def test_nas_data_check_works_for_digit_scenes(tmp_path, capsys):
    code = main(["data", "check", "--set", f"data.root={tmp_path}", "--set", "data.num_train=2",
                 "--set", "data.num_val=2", "--set", "data.image_size=[32,64]"])
    out = capsys.readouterr().out
    assert code == 0 and "train: 2 image/mask pairs OK, sizes 32x64 (2)" in out and "background" in out


def test_shipped_presets_load():
    from pathlib import Path

    from nas.config import load_config

    here = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "datasets"
    voc, camvid = read_classes(here / "voc.classes.yaml"), read_classes(here / "camvid.classes.yaml")
    assert voc.num_classes == 21 and voc.ignore_index == 255 and voc.colors == default_palette(21)
    assert camvid.num_classes == 11 and camvid.ignore_index == 11 and camvid.ignore_color == (0, 0, 0)
    cfg = load_config(here / "voc.yaml")
    assert cfg.data.name == "folder" and cfg.data.folder.split_file == "ImageSets/Segmentation/{split}.txt"
    assert load_config(here / "camvid.yaml").data.folder.splits == ("train", "val", "test")


def test_check_dataset_reports_unreadable_files_and_labels_out_of_range(folder_dataset):
    tree = folder_dataset
    tree.image_path("train", "train_002").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    name = next(n for n in tree.names["val"] if tree.kinds[("val", n)] == "index")
    mask = tree.mask_path("val", name)
    ids = np.array(Image.open(mask))
    ids[4, 9] = 7
    Image.fromarray(ids, mode="L").save(mask)
    report = check_dataset(tree.data_config())
    assert report.counts == {"train": 23, "val": 7} and len(report.problems) == 2
    assert report.problems[0].startswith(f"train: cannot read image {tree.image_path('train', 'train_002')}")
    assert report.problems[1] == (f"val: mask {mask}: pixel (9, 4) has label 7, out of range for 3 classes "
                                  "(0-2; 255 = ignore)")
    assert "\n" not in "".join(report.problems)
