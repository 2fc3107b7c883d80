"""Untrusted files: checkpoints and model files are loaded with `weights_only=True` (a pickled payload is refused,
never run), architecture and config files are data (never evaluated), artifact names and ids cannot reach
outside the study's artifact store or the download folder, and the dashboard binds to loopback by default."""

from __future__ import annotations

import ast
import inspect
import json
import os
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from PIL import Image

import nas.config
from nas.cli import build_parser, main
from nas.errors import ConfigError, UserError
from nas.studies.storage import AtomicArtifactStore, open_storage, safe_artifact_name
from nas.studies.study import StudyHandle, download_artifact
from search_spaces.arch import Architecture, ArchitectureError

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "nas").rglob("*.py"), *(REPO / "search_spaces").rglob("*.py"),
                  *(REPO / "experiments").glob("*.py")])


# --------------------------------------------------------------------------- the source, statically


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")  # `model(...).eval()` is not the builtin
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_is_weights_only():
    loads = [(p, c) for p in SOURCES for c in _calls(p) if _dotted(c.func) == "torch.load"]
    assert loads, "no torch.load found: the scan is broken"
    for path, call in loads:
        flag = _kw(call, "weights_only")
        assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}"


def test_nothing_read_from_a_file_is_executed():
    """No eval / exec / pickle / marshal; YAML only through safe loaders; NumPy without pickles; TorchScript (which
    is code) only loaded back by the export check, from the file the export itself just wrote."""
    banned = {"eval", "exec", "__import__", "pickle.load", "pickle.loads", "marshal.load", "marshal.loads",
              "yaml.unsafe_load", "yaml.full_load", "dill.load", "dill.loads"}
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        for call in _calls(path):
            name = _dotted(call.func)
            where = f"{rel}:{call.lineno} {name}"
            assert name not in banned, where
            if name == "yaml.load":
                loader = _kw(call, "Loader")
                assert isinstance(loader, ast.Name) and loader.id == "_Loader" and rel == "nas/config.py", where
            if name in ("np.load", "numpy.load"):
                flag = _kw(call, "allow_pickle")
                assert flag is None or (isinstance(flag, ast.Constant) and flag.value is False), where
            if name == "torch.jit.load":
                assert rel == "nas/exporter/torchscript.py", where
            if name == "load_torchscript":
                assert rel == "nas/exporter/verify.py", where
    assert issubclass(nas.config._Loader, yaml.SafeLoader)


# --------------------------------------------------------------------------- pickled payloads


class _Payload:
    """Unpickling this calls `os.mkdir(marker)`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A model file / checkpoint whose unpickling would create `marker`."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "nas-model", "version": 1, "kind": "train", "payload": _Payload(marker)}, path)
    return path, marker


def _into(evil_path: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(evil_path.read_bytes())
    return dest


ENTRIES = {  # every command that reads a checkpoint or model file a user may have received
    "export": lambda t, w, e: ["export", "--checkpoint", str(e), "--out", str(t / "x")],
    "predict": lambda t, w, e: ["predict", str(_image(t)), "--checkpoint", str(e), "--out", str(t / "x")],
    "train-teacher": lambda t, w, e: ["train", "--arch", str(w.arch0), "--kd", "pixel", "--teacher", str(e),
                                      *w.sets(t / "runs")],
    "train-resume": lambda t, w, e: ["train", "--resume", "--arch", str(w.arch0), *w.sets(t / "runs")]
    if _into(e, t / "runs" / "r" / "student" / "train.ckpt") else [],
    "search-resume": lambda t, w, e: ["search", "--resume", *w.sets(t / "runs")]
    if _into(e, t / "runs" / "r" / "search.ckpt") else [],
}


def _image(tmp: Path) -> Path:
    path = tmp / "image.png"
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_pickled_payload_is_refused_not_run(entry, tmp_path, work, evil, nas_cli, refused):
    path, marker = evil
    res = nas_cli(*ENTRIES[entry](tmp_path, work, path), timeout=300)
    refused(res, "cannot be loaded safely")
    assert not marker.exists(), "the payload ran"


def test_the_payload_is_live(evil):
    """The control: loading the same file the unsafe way does run it, so the tests above can fail."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.is_dir()


# --------------------------------------------------------------------------- architecture and config files

CODE = "__import__('os').mkdir('pwned')"


@pytest.mark.parametrize("field", ["kind", "final_upsample", "space.name", "space.ops", "cell.op", "distill.mode",
                                   "meta.note"])
def test_code_in_an_architecture_file_is_only_ever_a_string(field, work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = json.loads(work.arch0.read_text())
    if field == "space.ops":
        data["space"]["ops"].append(CODE)
    elif field == "cell.op":
        data["branches"][0]["cells"][0]["op"] = CODE
    elif "." in field:
        section, key = field.split(".")
        data[section][key] = CODE
    else:
        data[field] = CODE
    try:
        arch = Architecture.from_dict(data)
    except ArchitectureError:
        pass
    else:  # free-text fields load, verbatim, as text
        assert CODE in json.dumps(arch.to_dict())
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("text", [
    "run: !!python/object/apply:os.mkdir [pwned]\n",
    "run:\n  name: !!python/name:os.system\n",
    "!!python/object/new:os.mkdir [pwned]\n",
])
def test_yaml_tags_that_build_objects_are_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        nas.config.load_config(path)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- artifact names and ids


@pytest.mark.parametrize("name", ["../model.pt", "/etc/passwd", "a/b.json", ".hidden", "..", ".", "", "x" * 200,
                                  "model.pt\0", "a\\b", "model.pt/"])
def test_unsafe_artifact_names_are_refused(name):
    with pytest.raises(UserError, match="refusing artifact name"):
        safe_artifact_name(name)


def test_the_names_trials_use_are_safe():
    from nas.studies.objective import TRIAL_FILES

    for name in TRIAL_FILES:
        assert safe_artifact_name(name) == name


@pytest.mark.parametrize("artifact_id", ["../outside", "../../outside", "/abs/outside", "sub/../../outside", "", ".",
                                         "sub/inner"])
def test_the_artifact_store_never_reaches_outside_its_folder(artifact_id, tmp_path):
    import io

    store = AtomicArtifactStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.write_text("keep me")
    for act in (lambda: store.write(artifact_id, io.BytesIO(b"overwritten")),
                lambda: store.open_reader(artifact_id).read(), lambda: store.remove(artifact_id)):
        with pytest.raises(UserError, match="refusing artifact id"):
            act()
    assert outside.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["outside", "store"]


def _tampered_study(tmp_path: Path, filename: str, artifact_id: str | None) -> tuple[StudyHandle, str]:
    """A study whose one complete trial has a `model.pt` artifact, then its stored metadata rewritten as a
    hostile writer of a shared storage could: another file name, another id."""
    from optuna.artifacts import upload_artifact

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url, create=True)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    store = AtomicArtifactStore(tmp_path / "artifacts")
    trial = study.ask()
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    real_id = upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=trial)
    key = f"artifacts:{real_id}"
    meta = json.loads(storage.get_trial(trial._trial_id).system_attrs[key])
    meta.update(filename=filename, artifact_id=artifact_id or real_id)
    storage.set_trial_system_attr(trial._trial_id, key, json.dumps(meta))
    study.tell(trial, [0.5, 1.0])
    (tmp_path / "secret").write_bytes(b"not an artifact")
    return StudyHandle(study, storage, url, tmp_path / "s", store), url


@pytest.mark.parametrize(("filename", "artifact_id", "message"), [
    ("../../escape.pt", None, "refusing artifact name"),
    ("model.pt", "../secret", "refusing artifact id"),
])
def test_a_tampered_storage_cannot_steer_a_download(filename, artifact_id, message, tmp_path):
    handle, _ = _tampered_study(tmp_path, filename, artifact_id)
    dest = tmp_path / "a" / "b" / "download"
    with pytest.raises(UserError, match=message):
        download_artifact(handle, handle.study.trials[0], filename, dest)
    assert not (tmp_path / "a").exists() and not (tmp_path / "escape.pt").exists()


@pytest.mark.slow
def test_study_export_from_a_tampered_storage_is_one_line_exit_2(tmp_path, nas_cli, refused, snapshot):
    _, url = _tampered_study(tmp_path, "model.pt", "../secret")
    before = snapshot(tmp_path)
    res = nas_cli("study", "export", "s", "--trial", "0", "--format", "json", "--storage", url,
                  "--artifacts", str(tmp_path / "artifacts"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    refused(res, "refusing artifact id '../secret'")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- the dashboard


@pytest.fixture
def fake_dashboard(monkeypatch, tmp_path):
    """A stand-in for optuna-dashboard that records where it was asked to listen; and a study to serve."""
    import nas.studies.dashboard as dashboard

    served: dict = {}

    class _Fake:
        @staticmethod
        def run_server(storage, host, port, artifact_store):
            served.update(host=host, port=port)

    monkeypatch.setattr(dashboard, "require_dashboard", lambda: _Fake)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="s", storage=open_storage(url, create=True))
    return served, url


def test_the_dashboard_binds_to_loopback_unless_told_otherwise(fake_dashboard, caplog):
    from nas.studies.dashboard import serve

    assert build_parser().parse_args(["study", "dashboard", "s"]).host == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    served, url = fake_dashboard
    assert main(["study", "dashboard", "s", "--storage", url, "--port", "8123"]) == 0
    assert served == {"host": "127.0.0.1", "port": 8123}
    assert "no authentication" not in caplog.text
    assert main(["study", "dashboard", "s", "--storage", url, "--host", "0.0.0.0"]) == 0
    assert served["host"] == "0.0.0.0" and "reachable from other machines" in caplog.text
