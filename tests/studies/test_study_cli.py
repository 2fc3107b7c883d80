"""`nas study` end to end on tiny shapes: a 3-trial SQLite study through the CLI, then show / pareto / plot /
export to ONNX (run in ONNX Runtime), the dashboard over HTTP, and a crashed worker's trial retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.cli import main
from nas.studies import load_frame, trial_seed

pytestmark = pytest.mark.slow

K = 11  # digit-scenes classes
HW = (64, 128)  # as in conftest's tiny config


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_config, nas_cli):
    """A 3-trial SQLite study run through the CLI: KD from a per-study teacher, sampled latency targets,
    a latency budget loose enough that trials are feasible."""
    tmp = tmp_path_factory.mktemp("study")
    cfg = tiny_config(tmp / "tiny.yaml", tmp / "studies")
    space = tmp / "space.yaml"
    space.write_text("latency_target_ms: {low: 2.0, high: 8.0, log: true}\n"
                     "kd: {choices: [pixel]}\n"
                     "tutor: {choices: [none, '8']}\n")
    url = f"sqlite:///{tmp / 'studies' / 'studies.db'}"
    t0 = time.perf_counter()
    res = nas_cli("study", "run", "--study", "s3", "--storage", url, "--n-trials", "3", "--config", str(cfg),
                  "--space", str(space), "--set", "study.latency_budget_ms=5000")
    assert res.returncode == 0, res.stderr[-3000:]
    return {"tmp": tmp, "url": url, "cfg": cfg, "run": res, "seconds": time.perf_counter() - t0}


def test_three_trial_study_records_objectives_constraints_seeds_and_artifacts(study):
    assert "3 trials, 3 complete, 0 failed" in study["run"].stdout
    s = optuna.load_study(study_name="s3", storage=study["url"])
    assert [d.name for d in s.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert s.metric_names == ["val_miou", "latency_ms"]
    trials = s.get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    root = study["tmp"] / "studies"
    artifacts = root / "studies_artifacts"
    for t in trials:
        miou, latency = t.values
        assert 0.0 <= miou <= 1.0 and latency > 0
        assert t.constraints["latency_over_budget_ms"] == pytest.approx(latency - 5000)
        assert t.user_attrs["seed"] == trial_seed(0, t.number)
        folder = root / "s3" / f"trial_{t.number}"
        assert t.user_attrs["run_dir"] == str(folder)
        for name in ("student.arch.json", "metrics.csv", "student/model.pt", "student/metrics.csv"):
            assert (folder / name).is_file(), name
        summary = t.user_attrs["summary"]
        assert summary["val_miou"] == pytest.approx(miou, abs=1e-6) and summary["kd"] == ["pixel"]
        ids = t.user_attrs["artifacts"]
        assert set(ids) == {"student.arch.json", "search_metrics.csv", "train_metrics.csv", "scores.json",
                            "model.pt"}
        stored = json.loads((artifacts / ids["student.arch.json"]).read_text())
        assert stored == json.loads((folder / "student.arch.json").read_text())
        assert (artifacts / ids["model.pt"]).read_bytes() == (folder / "student" / "model.pt").read_bytes()
    assert len({t.user_attrs["seed"] for t in trials}) == 3
    assert (root / "s3" / "teacher" / "teacher" / "model.pt").is_file()  # trained once for the study
    assert not list(artifacts.glob(".*.tmp"))


def test_show_pareto_plot_and_frame(study, nas_cli):
    url = study["url"]
    show = nas_cli("study", "show", "s3", "--storage", url)
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert lines[0].split()[:5] == ["trial", "state", "val_mIoU", "latency_ms", "constraint"]
    assert sum(1 for line in lines[1:4] if "COMPLETE" in line) == 3 and "lat_T" in lines[0]
    s = optuna.load_study(study_name="s3", storage=url)
    front = {t.number for t in s.best_trials}
    starred = {int(line.split()[1]) for line in lines[1:4] if line.startswith("*")}
    assert starred == front and front
    table = study["tmp"] / "s3_trials.csv"
    assert main(["study", "show", "s3", "--storage", url, "--csv", str(table)]) == 0
    csv_rows = pd.read_csv(table)
    assert list(csv_rows["number"]) == [0, 1, 2] and {"val_miou", "latency_ms", "state"} <= set(csv_rows.columns)
    assert "params" not in csv_rows.columns  # one column per parameter
    pareto = nas_cli("study", "pareto", "s3", "--storage", url)
    assert pareto.returncode == 0, pareto.stderr
    for n in front:
        assert f"trial {n}: arch " in pareto.stdout
    res = nas_cli("study", "plot", "s3", "--storage", url)  # default: pareto.png in the study's folder
    assert res.returncode == 0, res.stderr[-2000:]
    default = study["tmp"] / "studies" / "s3" / "pareto.png"
    assert str(default) in res.stdout and default.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for kind in ("pareto", "history", "importance", "parallel"):  # in-process: the same CLI, no start-up cost
        out = study["tmp"] / f"{kind}.png"
        assert main(["study", "plot", "s3", "--kind", kind, "--out", str(out), "--storage", url]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000, kind
        assert not list(study["tmp"].glob(f".{kind}.png.*.tmp"))
    frame = load_frame("s3", url)
    assert list(frame["number"]) == [0, 1, 2]
    assert {"values_val_miou", "values_latency_ms", "params_latency_target_ms", "pareto", "constraint"} <= set(
        frame.columns)
    assert set(frame.loc[frame["pareto"], "number"]) == front
    listing = nas_cli("study", "list", "--storage", url)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].split()[:3] == ["s3", "3", "3"]


def test_export_a_pareto_trial_to_onnx_that_runs_in_onnxruntime(study, nas_cli):
    ort = pytest.importorskip("onnxruntime")
    s = optuna.load_study(study_name="s3", storage=study["url"])
    best = min(s.best_trials, key=lambda t: t.values[1])
    out = study["tmp"] / "export"
    res = nas_cli("study", "export", "s3", "--trial", str(best.number), "--format", "onnx", "--out", str(out),
              "--storage", study["url"], "--config", str(study["cfg"]))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "export_report.json").read_text())
    assert report["formats"]["onnx"]["max_abs_diff"] <= 1e-4
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, *HW)).astype(np.float32)
    (logits,) = sess.run(None, {"image": x})
    assert logits.shape == (1, K, *HW) and np.isfinite(logits).all()


def test_unknown_study_trial_or_storage_is_one_line_exit_2(study, tmp_path, nas_cli, capsys):
    url = study["url"]
    cases = [
        (("study", "show", "nope", "--storage", url), "no study named 'nope'"),
        (("study", "plot", "nope", "--storage", url), "no study named 'nope'"),
        (("study", "export", "s3", "--trial", "7", "--format", "onnx", "--storage", url), "has no trial 7"),
        (("study", "show", "s3", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"), "no study storage at"),
        (("study", "list", "--storage", "postgresql+psycopg2://nas:secret@127.0.0.1:1/nas"),
         "cannot open the study storage"),
        (("study", "run", "--study", "../escape", "--n-trials", "1", "--storage", f"sqlite:///{tmp_path / 'x.db'}"),
         "study name"),
    ]
    for args, message in cases[:1]:  # one through a fresh process: no traceback, exit code 2
        res = nas_cli(*args, timeout=120)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    for args, message in cases:
        capsys.readouterr()
        assert main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err and "secret" not in err, err


def test_dashboard_serves_the_study_and_its_artifacts(study, free_port):
    pytest.importorskip("optuna_dashboard")
    port = free_port
    proc = subprocess.Popen([sys.executable, "-m", "nas", "study", "dashboard", "s3", "--storage", study["url"],
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/studies/" in first, first
        study_id = int(first.rsplit("/", 1)[1])
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=10) as resp:
                    data = json.loads(resp.read())
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        assert data["name"] == "s3" and len(data["trials"]) == 3
        s = optuna.load_study(study_name="s3", storage=study["url"])
        trial = s.trials[0]
        artifact_id = trial.user_attrs["artifacts"]["student.arch.json"]
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{trial._trial_id}/{artifact_id}",
                                    timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["kind"] == "student" and body["schema_version"] == 1
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode is not None


def test_a_crashed_workers_trial_is_retried_in_its_own_folder(tmp_path, tiny_config, nas_cli):
    """SIGKILL a worker mid-trial; the next worker fails the stale trial (heartbeat) and reruns it with the same
    parameters, seed and folder, resuming the search checkpoint."""
    cfg = tiny_config(tmp_path / "tiny.yaml", tmp_path / "studies")
    space = tmp_path / "space.yaml"
    space.write_text("latency_target_ms: 0.0\nkd: none\nsearch_epochs: {key: search.epochs, value: 3}\n")
    url = f"sqlite:///{tmp_path / 'studies' / 'studies.db'}"
    args = ["study", "run", "--study", "crash", "--storage", url, "--config", str(cfg), "--space", str(space),
            "--set", "study.heartbeat_s=1", "--set", "study.grace_s=3"]
    proc = subprocess.Popen([sys.executable, "-m", "nas", *args, "--n-trials", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "studies" / "crash" / "trial_0" / "search.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.is_file() and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.is_file() and proc.poll() is None, "the worker finished or wrote no checkpoint before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the grace period
    res = nas_cli(*args, "--n-trials", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    s = optuna.load_study(study_name="crash", storage=url)
    first, retry = s.get_trials()
    assert first.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params
    assert retry.user_attrs["seed"] == trial_seed(0, 0)
    assert retry.user_attrs["run_dir"] == str(ckpt.parent)
    assert not (tmp_path / "studies" / "crash" / "trial_1").exists()
    assert "trial 1 retries trial 0" in res.stderr
    epochs = [line.split(",")[0] for line in (ckpt.parent / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]  # resumed after the kill: no epoch lost or repeated
