"""`nas run` end to end on the tiny config through the real CLI: every stage writes its artifact and the summary
names them; a second run skips every finished stage; `--from` redoes a stage, keeping the earlier outputs; the
Python API runs the same pipeline and loads and predicts with its model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nas
from nas.cli import main
from nas.pipeline import STAGES


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_config) -> dict:
    """One pipeline run with pixel KD from a teacher trained in the run (module-wide: it takes a few seconds)."""
    root = tmp_path_factory.mktemp("pipeline")
    cfg = tiny_config(root / "tiny.yaml", root / "studies")
    args = ["run", "--config", str(cfg), "--set", f"run.root={root / 'runs'}", "--name", "p",
            "--set", "search.latency_target_ms=1000", "--set", "distill.losses=[pixel]"]
    return {"root": root, "args": args, "run": root / "runs" / "p"}


def test_run_writes_every_stage_and_a_summary(finished, capsys):
    assert main(finished["args"]) == 0
    out = capsys.readouterr().out
    run = finished["run"]
    state = json.loads((run / "pipeline.json").read_text())
    assert list(state["stages"]) == list(STAGES)
    for path in ("student.arch.json", "teacher/model.pt", "student/model.pt", "student/scores.json",
                 "student/export/model.ts", "student/export/model.onnx", "student/export/export_report.json"):
        assert (run / path).is_file(), path
    assert f"stages run now: {', '.join(STAGES)}" in out
    assert "student:" in out and "val mIoU" in out and "export:" in out
    report = json.loads((run / "student/export/export_report.json").read_text())
    assert report["input_hw"] == [64, 128]  # the latency input size of the tiny config
    assert not (run / ".lock").exists()


def test_rerun_skips_every_finished_stage(finished, capsys):
    before = (finished["run"] / "student" / "model.pt").stat().st_mtime_ns
    assert main(finished["args"]) == 0
    out = capsys.readouterr().out
    assert "stages run now: none" in out and f"already done: {', '.join(STAGES)}" in out
    assert (finished["run"] / "student" / "model.pt").stat().st_mtime_ns == before


def test_from_stage_redoes_it_and_keeps_the_earlier_outputs(finished, capsys):
    assert main([*finished["args"], "--from", "export"]) == 0
    out = capsys.readouterr().out
    assert "stages run now: export" in out
    previous = list((finished["run"] / "previous").glob("*/export/model.ts"))
    assert previous, "the earlier export was moved aside, not deleted"


def test_python_api_runs_loads_and_predicts(finished):
    result = nas.run(finished["args"][2], overrides=[f"run.root={finished['root'] / 'runs'}", "run.name=p",
                                                   "search.latency_target_ms=1000", "distill.losses=[pixel]"])
    assert result.ran == [] and result.model_path is not None and 0 <= result.val_miou <= 1
    model = nas.load_model(result.model_path)
    assert not model.training and model.input_hw == (64, 128) and model.class_names[0] == "background"
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    labels = nas.predict(model, image)
    assert labels.shape == (50, 70) and labels.dtype == np.int64
    assert 0 <= labels.min() and labels.max() < len(model.class_names)


def test_unknown_stage_and_locked_folder_are_one_line_errors(finished, capsys):
    import os
    import subprocess
    import sys

    assert main([*finished["args"], "--from", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = finished["run"] / ".lock"
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "job": "nas run",
                                    "started": "now"}))
        assert main(finished["args"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by a nas run (pid {sleeper.pid}" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(finished["args"]) == 0  # the holder is gone: its stale lock is taken over
    assert not lock.exists()


def test_readme_python_section_runs(finished, tmp_path):
    """The README's "Python" block, with the paths of this test's run."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    block = block.replace("runs/quickstart/student/model.pt", str(finished["run"] / "student" / "model.pt"))
    block = block.replace("data/scene.png", str(_scene(tmp_path)))
    block = block.replace('nas.run("experiments/configs/quickstart.yaml")',
                          f'nas.run({finished["args"][2]!r}, overrides=["run.root={finished["root"] / "runs"}", '
                          '"run.name=p", "search.latency_target_ms=1000", "distill.losses=[pixel]"])')
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["labels"].shape == (64, 128)


def _scene(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(path)
    return path
