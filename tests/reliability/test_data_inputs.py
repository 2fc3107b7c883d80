"""Bad data of your own through the real CLI (`python -m nas ...` in a subprocess): an unknown dataset name, a
folder tree without its classes file, an RGB mask with a colour no class has, a mask of another size than its
image, an empty split, and `nas train` on a broken tree. Each is refused with one line naming the problem, exit
code 2, and leaves its folder exactly as it was (training never starts: no run folder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from folder_fixture import FolderTree, make_folder_dataset
from PIL import Image

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, object], list[str]]  # (folder, work) -> argv; writes the bad tree into folder
    message: str  # what the one error line must say


def _tree(tmp: Path) -> FolderTree:
    return make_folder_dataset(tmp / "data", n_train=8, n_val=4)


def _unknown_colour(tree: FolderTree) -> Path:
    name = next(n for n in tree.names["train"] if tree.kinds[("train", n)] == "rgb")
    mask = tree.mask_path("train", name)
    rgb = np.array(Image.open(mask))
    rgb[3, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(mask)
    return mask


def _size_mismatch(tree: FolderTree) -> Path:
    mask = tree.mask_path("train", "train_001")
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8), mode="L").save(mask)
    return mask


def _check(spoil: Callable[[FolderTree], object]):
    """A case builder: fabricate a tree, spoil it, `nas data check` it."""

    def build(tmp: Path, work) -> list[str]:
        tree = _tree(tmp)
        spoil(tree)
        return ["data", "check", *tree.set_flags()]

    return build


def _empty_val(tree: FolderTree) -> None:
    for p in (tree.root / "images" / "val").iterdir():
        p.unlink()
    for p in (tree.root / "masks" / "val").iterdir():
        p.unlink()


def _unknown_name(tmp: Path, work) -> list[str]:
    return ["data", "check", "--set", "data.name=my_dataset", "--set", f"data.root={tmp}"]


def _train_on(spoil: Callable[[FolderTree], object]):
    """`nas train --model teacher` (the tiny HRNet) on a spoiled tree, outputs under <folder>/runs."""

    def build(tmp: Path, work) -> list[str]:
        tree = _tree(tmp)
        spoil(tree)
        return ["train", "--model", "teacher", *work.sets(tmp / "runs"), *tree.set_flags(),
                "--set", "train.iters_per_epoch=1"]

    return build


CASES = [
    Case("unknown-dataset-name", _unknown_name,
         "config key 'data.name': unknown dataset 'my_dataset' (known: cityscapes, digit_scenes, folder"),
    Case("folder-without-classes-file", _check(lambda t: (t.root / "classes.yaml").unlink()),
         "classes file not found"),
    Case("rgb-mask-with-an-unknown-colour", _check(_unknown_colour), "pixel (5, 3) has color (1, 2, 3)"),
    Case("mask-and-image-of-different-sizes", _check(_size_mismatch), "is 10x12 but its image"),
    Case("empty-split", _check(_empty_val), "the val split is empty"),
    Case("train-on-a-tree-with-a-size-mismatch", _train_on(_size_mismatch),
         "the train split of"),
    Case("train-on-a-tree-with-an-unknown-colour", _train_on(_unknown_colour), "has color (1, 2, 3)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data_is_one_line_exit_2_and_leaves_nothing_behind(case, tmp_path, work, nas_cli, refused, snapshot):
    argv = case.build(tmp_path, work)
    before = snapshot(tmp_path)
    res = nas_cli(*argv, timeout=300)
    line = refused(res, case.message)
    assert "Traceback" not in res.stderr, line
    assert snapshot(tmp_path) == before, "the refused command wrote or changed files"
    assert not (tmp_path / "runs").exists(), "a run folder was created"


def test_a_broken_tree_names_the_file_when_training_is_refused(tmp_path, work, nas_cli, refused):
    spoiled: list[Path] = []
    argv = _train_on(lambda t: spoiled.append(_size_mismatch(t)))(tmp_path, work)
    res = nas_cli(*argv, timeout=300)
    line = refused(res, str(spoiled[0]))
    assert "is 10x12 but its image" in line and not (tmp_path / "runs").exists()
