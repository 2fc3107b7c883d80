"""`nas run` end to end on a fabricated folder dataset through the real CLI (the "your own data" path): 24 + 8
images of two sizes, 3 classes, index / RGB / P-mode masks. `nas data check` finds the one broken pair and `nas
run` refuses the tree before any work; repaired, the pipeline trains a teacher on it, searches, retrains with KD,
exports and summarises; a rerun skips every stage. The README's "Your own data" files are the ones used here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nas.cli import main
from nas.pipeline import STAGES

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def _tiny(tree, tmp_path: Path, shared: Path) -> list[str]:
    return ["--set", "run.threads=1", "--set", "run.log_every=0", "--set", "run.device=cpu",
            "--set", f"run.root={tmp_path / 'runs'}", "--name", "mine", *tree.set_flags(),
            "--set", "space.name=tiny", "--set", "latency.input_hw=[64,128]", "--set", "latency.calibrate=0",
            "--set", "latency.repeats=2", "--set", "latency.warmup=1", "--set", "latency.rounds=1",
            "--set", "latency.threads=1", "--set", f"latency.cache_dir={shared / 'tables'}",
            "--set", "search.warmup_epochs=1", "--set", "search.epochs=1", "--set", "search.iters_per_epoch=2",
            "--set", "search.val_batches=1", "--set", "search.latency_target_ms=1000",
            "--set", "train.hrnet_preset=tiny", "--set", "train.epochs=1", "--set", "train.iters_per_epoch=2",
            "--set", "export.real_images=2", "--set", "export.repeats=2", "--set", "export.warmup=1",
            "--set", "export.threads=1", "--set", "distill.losses=[pixel]"]


def test_folder_dataset_end_to_end(folder_dataset, tmp_path, shared, capsys):
    tree = folder_dataset
    args = _tiny(tree, tmp_path, shared)
    image, mask = tree.files[("train", tree.names["train"][0])]
    good = mask.read_bytes()
    Image.new("L", (17, 23)).save(mask)  # one broken pair: the mask's size differs from its image's

    assert main(["data", "check", *tree.set_flags()]) == 2
    out, err = capsys.readouterr()
    assert mask.name in out + err and "size" in (out + err)
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and mask.name in err
    assert not (tmp_path / "runs").exists()  # refused before any work

    mask.write_bytes(good)
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "mine"
    for path in ("pipeline.json", "student.arch.json", "teacher/model.pt", "student/model.pt",
                 "student/export/model.ts", "student/export/model.onnx", "student/export/export_report.json"):
        assert (run / path).is_file(), path
    model = json.loads((run / "student" / "scores.json").read_text())
    assert set(model["per_class"]) == {"background", "road", "car"}  # the user's class names
    assert "student:" in out and "export:" in out

    assert main(["run", *args]) == 0
    assert f"already done: {', '.join(STAGES)}" in capsys.readouterr().out


def test_readme_classes_yaml_reads_as_a_folder_dataset(tmp_path):
    """The README's `classes.yaml` is a valid classes file for the folder dataset."""
    from nas.config import DataConfig
    from nas.data import dataset_info

    section = README.read_text().split("## Your own data", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    classes = "\n".join(line[:45].rstrip() for line in block.splitlines() if line.strip())
    (tmp_path / "classes.yaml").write_text(classes.replace("# classes.yaml", "").replace("# my.yaml", ""))
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "masks" / split).mkdir(parents=True)
    info = dataset_info(DataConfig(name="folder", root=str(tmp_path)))
    assert info.class_names == ("road", "car", "person")
    assert info.palette[2] == (220, 20, 60)
