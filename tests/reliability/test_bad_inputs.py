"""Bad inputs through the real CLI (`python -m nas ...` in a subprocess): each is refused with one line naming the
problem, exit code 2, and leaves its folder exactly as it was (no partial output, nothing overwritten).

Rows this matrix does not repeat because other tests already drive them through the CLI: `--set` with an unknown
key or a wrong type (tests/test_cli.py, tests/searcher/test_search_cli.py: 4), a missing Cityscapes root
(tests/test_cli_data.py: 1), a missing architecture file and KD without a teacher (tests/trainer/test_train_loop.py:
2), an unknown study, an unknown trial, a missing storage file, an unreachable PostgreSQL server and a study name
with a path in it (tests/studies/test_study_cli.py: 6).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.io import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[..., list[str]]  # (folder, work, trained) -> argv; writes the bad input into folder
    message: str  # what the one error line must say


# --------------------------------------------------------------------------- architecture files


def _arch(work) -> dict:
    return json.loads(work.arch0.read_text())


def _arch_file(text: str | bytes | Callable[[dict], object]):
    """A case builder: write the bad architecture file, then `nas arch show` it."""

    def build(tmp: Path, work, trained) -> list[str]:
        path = tmp / "bad.arch.json"
        data = text(_arch(work)) if callable(text) else text
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data))
        return ["arch", "show", str(path), "--input", "64x128"]

    return build


def _edit(**where):
    """A valid architecture with fields replaced: `_edit(schema_version=2)`, `_edit(cell_op="dilated")`."""

    def apply(d: dict) -> dict:
        for key, value in where.items():
            if key == "cell_op":
                d["branches"][0]["cells"][0]["op"] = value
            elif key == "cell_width":
                d["branches"][0]["cells"][0]["width"] = value
            elif key == "space_op":
                d["space"]["ops"][0] = value
            elif value is None:
                del d[key]
            else:
                d[key] = value
        return d

    return apply


def _truncated(d: dict) -> str:
    text = json.dumps(d)
    return text[: len(text) // 2]


def _train_bad_arch(tmp: Path, work, trained) -> list[str]:
    path = tmp / "bad.arch.json"
    path.write_text(_truncated(_arch(work)))
    return ["train", "--arch", str(path), *work.sets(tmp / "runs")]


ARCH = [
    Case("arch-malformed-json", _arch_file('{"schema_version": 1,, "kind": "student"}'), "is not valid JSON"),
    Case("arch-truncated", _arch_file(_truncated), "is not valid JSON"),
    Case("arch-empty-file", _arch_file(""), "is not valid JSON"),
    Case("arch-not-utf8", _arch_file(b"\xff\xfe\x00\x81 binary"), "is not UTF-8 text"),
    Case("arch-nested-too-deeply", _arch_file("[" * 100_000), "nested too deeply"),
    Case("arch-integer-beyond-digit-limit", _arch_file('{"schema_version": ' + "9" * 5000 + "}"), "not valid JSON"),
    Case("arch-not-an-object", _arch_file("[1, 2, 3]"), "field <top level>: expected an object"),
    Case("arch-newer-schema-version", _arch_file(_edit(schema_version=2)), "schema_version: 2 is not supported"),
    Case("arch-no-schema-version", _arch_file(_edit(schema_version=None)), "schema_version: missing"),
    Case("arch-unknown-cell-op", _arch_file(_edit(cell_op="dilated_conv")), "unknown op 'dilated_conv'"),
    Case("arch-unknown-space-op", _arch_file(_edit(space_op="__import__('os')")), "unknown op"),
    Case("arch-unknown-width", _arch_file(_edit(cell_width=0.37)), "0.37 is not in the space's widths"),
    Case("arch-width-too-large-for-a-float", _arch_file(_edit(cell_width=10**400)), "is too large"),
    Case("train-with-a-truncated-arch", _train_bad_arch, "is not valid JSON"),
]


# --------------------------------------------------------------------------- config files and --set


def _config(text: str | bytes):
    def build(tmp: Path, work, trained) -> list[str]:
        path = tmp / "bad.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["search", "--config", str(path), "--set", f"run.root={tmp / 'runs'}"]

    return build


def _seed_override(tmp: Path, work, trained) -> list[str]:
    return ["search", *work.sets(tmp / "runs"), "--set", "run.seed=0x_"]


CONFIG = [
    Case("config-unknown-key", _config("search:\n  epochs: 2\n  warmpu_epochs: 1\n"),
         "unknown config key 'search.warmpu_epochs'"),
    Case("config-unknown-section", _config("serach:\n  epochs: 2\n"), "unknown config key 'serach'"),
    Case("config-wrong-type", _config("search:\n  epochs: many\n"), "config key 'search.epochs': expected an integer"),
    Case("config-wrong-list-length", _config("data:\n  image_size: [64, 128, 3]\n"), "expected 2 items"),
    Case("config-not-a-choice", _config("search:\n  latency_loss: cubic\n"), "is not one of"),
    Case("config-not-yaml", _config("search: [unclosed\n"), "is not valid YAML"),
    Case("config-impossible-date", _config("run:\n  name: 2020-13-45\n"), "is not valid YAML"),
    Case("config-not-utf8", _config(b"\xff\xfe\x00run: {}\n"), "is not UTF-8 text"),
    Case("config-non-string-keys", _config("{1: a, b: c}\n"), "unknown config key '1'"),
    Case("set-value-yaml-cannot-build", _seed_override, "config key 'run.seed': expected an integer, got '0x_'"),
]


# --------------------------------------------------------------------------- Cityscapes trees

H, W = 16, 32


def _pair(root: Path, split: str, city: str, name: str, ids: np.ndarray | None = None,
          label_size: tuple[int, int] = (H, W)) -> tuple[Path, Path]:
    img = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    lab = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    lab.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img)
    ids = np.full(label_size, 7, dtype=np.uint8) if ids is None else ids  # 7 = road
    Image.fromarray(ids, mode="L").save(lab)
    return img, lab


def _tree(spoil: str):
    """A two-image Cityscapes tree with one problem, checked by `nas data check-cityscapes`."""

    def build(tmp: Path, work, trained) -> list[str]:
        root = tmp / "cityscapes"
        _pair(root, "train", "aachen", "aachen_000000_000019")
        if spoil == "no-label":
            _pair(root, "train", "aachen", "aachen_000001_000019")[1].unlink()
        elif spoil == "id-outside-table":
            ids = np.full((H, W), 7, dtype=np.uint8)
            ids[3, 5] = 40
            _pair(root, "train", "bremen", "bremen_000000_000019", ids)
        elif spoil == "size-mismatch":
            _pair(root, "train", "bremen", "bremen_000000_000019", label_size=(H, W + 2))
        elif spoil == "split-label-folder-missing":
            _pair(root, "val", "frankfurt", "frankfurt_000000_000019")
            for p in sorted((root / "gtFine" / "val").rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            (root / "gtFine" / "val").rmdir()
        elif spoil == "image-not-png":
            img, _ = _pair(root, "train", "bremen", "bremen_000000_000019")
            img.write_bytes(b"not a png")
        elif spoil == "rgb-label":
            _, lab = _pair(root, "train", "bremen", "bremen_000000_000019")
            Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(lab)
        return ["data", "check-cityscapes", str(root)]

    return build


def _inspect_bad_ids(tmp: Path, work, trained) -> list[str]:
    root = Path(_tree("id-outside-table")(tmp, work, trained)[-1])
    return ["data", "inspect", "--set", "data.name=cityscapes", "--set", f"data.root={root}",
            "--set", f"data.image_size=[{2 * H},{2 * W}]", "--set", f"run.root={tmp / 'runs'}"]  # multiples of 32


CITYSCAPES = [
    Case("cityscapes-image-without-label", _tree("no-label"), "Cityscapes label missing for"),
    Case("cityscapes-label-id-outside-table", _tree("id-outside-table"), "holds id 40, which is not in the label table"),
    Case("cityscapes-image-label-size-mismatch", _tree("size-mismatch"), "is 16x34 but its image is 16x32"),
    Case("cityscapes-split-label-folder-missing", _tree("split-label-folder-missing"),
         "Cityscapes split folder not found"),
    Case("cityscapes-image-not-an-image", _tree("image-not-png"), "cannot read"),
    Case("cityscapes-rgb-label", _tree("rgb-label"), "expected single-channel label ids"),
    Case("cityscapes-loader-id-outside-table", _inspect_bad_ids, "holds id 40, which is not in the label table"),
]


# --------------------------------------------------------------------------- latency tables


def _foreign_table(tmp: Path) -> Path:
    """A table as `nas latency build` writes it, but measured on another device."""
    from nas.latency.table import LatencyTable

    prov = {"device": "NVIDIA H100 80GB HBM3", "backend": "torch", "dtype": "float32", "batch": 1, "threads": 1,
            "input_hw": [64, 128]}
    return LatencyTable(provenance=prov, entries={"conv:x": 0.5}).save(tmp / "h100.json")


def _validate_foreign(tmp: Path, work, trained) -> list[str]:
    return ["latency", "validate", *work.sets(tmp / "runs"), "--set", f"latency.table={_foreign_table(tmp)}"]


def _search_foreign(tmp: Path, work, trained) -> list[str]:
    return ["search", *work.sets(tmp / "runs"), "--set", f"latency.table={_foreign_table(tmp)}",
            "--set", "search.latency_target_ms=5"]


def _show_table(mutate: Callable[[Path], None]):
    def build(tmp: Path, work, trained) -> list[str]:
        path = _foreign_table(tmp)
        mutate(path)
        return ["latency", "show", str(path)]

    return build


LATENCY = [
    Case("latency-table-of-another-device", _validate_foreign, "was measured under other conditions (device"),
    Case("search-with-a-table-of-another-device", _search_foreign, "was measured under other conditions (device"),
    Case("latency-table-truncated", _show_table(lambda p: p.write_text(p.read_text()[:40])), "is not valid JSON"),
    Case("latency-table-other-version",
         _show_table(lambda p: p.write_text(p.read_text().replace('"table_version": 1', '"table_version": 7'))),
         "has version 7, expected 1"),
]


# --------------------------------------------------------------------------- checkpoints and model files


def _copy_run(trained: Path, tmp: Path) -> Path:
    """The trained run's `student/` folder copied to `<tmp>/runs/r/student`."""
    import shutil

    return Path(shutil.copytree(trained, tmp / "runs" / "r" / "student"))


def _resume_other_arch(tmp: Path, work, trained) -> list[str]:
    _copy_run(trained, tmp)
    return ["train", "--resume", "--arch", str(work.arch1), *work.sets(tmp / "runs"),
            "--set", "train.iters_per_epoch=1"]


def _resume_corrupt(tmp: Path, work, trained) -> list[str]:
    ckpt = _copy_run(trained, tmp) / "train.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return ["train", "--resume", "--arch", str(work.arch0), *work.sets(tmp / "runs"),
            "--set", "train.iters_per_epoch=1"]


def _search_resume_garbage(tmp: Path, work, trained) -> list[str]:
    (tmp / "runs" / "r").mkdir(parents=True)
    (tmp / "runs" / "r" / "search.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    return ["search", "--resume", *work.sets(tmp / "runs")]


def _model(tmp: Path, trained: Path, how: str) -> Path:
    path = tmp / "model.pt"
    if how == "truncated":
        data = (trained / "model.pt").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif how == "other-arch":  # a model file whose weights belong to another architecture than it names
        from nas.io import read_json

        state = load_checkpoint(trained / "model.pt")
        state["arch"] = read_json(trained.parent.parent.parent / "arch1.json")
        save_checkpoint(path, state)
    elif how == "training-checkpoint":
        path.write_bytes((trained / "train.ckpt").read_bytes())
    return path


def _export(how: str):
    def build(tmp: Path, work, trained) -> list[str]:
        return ["export", "--checkpoint", str(_model(tmp, trained, how)), "--out", str(tmp / "export"),
                "--format", "torchscript"]

    return build


def _teacher_corrupt(tmp: Path, work, trained) -> list[str]:
    teacher = _model(tmp, trained, "truncated")
    return ["train", "--arch", str(work.arch0), "--kd", "pixel", "--teacher", str(teacher), *work.sets(tmp / "runs")]


def _predict_bad_image(tmp: Path, work, trained) -> list[str]:
    good, bad = tmp / "good.png", tmp / "bad.png"
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    model = tmp / "model.pt"
    model.write_bytes((trained / "model.pt").read_bytes())
    return ["predict", str(good), str(bad), "--checkpoint", str(model), "--out", str(tmp / "pred")]


CHECKPOINTS = [
    Case("resume-a-checkpoint-of-another-architecture", _resume_other_arch, "belongs to another architecture"),
    Case("resume-a-truncated-checkpoint", _resume_corrupt, "cannot be loaded safely"),
    Case("resume-a-search-checkpoint-that-is-not-one", _search_resume_garbage, "cannot be loaded safely"),
    Case("export-a-truncated-model-file", _export("truncated"), "cannot be loaded safely"),
    Case("export-a-model-file-of-another-architecture", _export("other-arch"), "do not fit its architecture"),
    Case("export-a-training-checkpoint", _export("training-checkpoint"), "is not a nas model file"),
    Case("teacher-file-truncated", _teacher_corrupt, "cannot be loaded safely"),
    Case("predict-with-one-unreadable-image", _predict_bad_image, "cannot read image"),
]


# --------------------------------------------------------------------------- studies


def _study_missing(tmp: Path, work, trained) -> list[str]:
    import optuna

    from nas.studies.storage import open_storage

    url = f"sqlite:///{tmp / 'studies.db'}"
    optuna.create_study(study_name="other", storage=open_storage(url, create=True))
    return ["study", "pareto", "nope", "--storage", url]


def _study_run_unreachable(tmp: Path, work, trained) -> list[str]:
    return ["study", "run", "--study", "s", "--n-trials", "1", "--config", str(work.config),
            "--set", f"study.root={tmp / 'studies'}", "--storage", "postgresql+psycopg2://nas:secret@127.0.0.1:1/nas"]


STUDIES = [
    Case("study-that-does-not-exist", _study_missing, "no study named 'nope'"),
    Case("study-run-on-an-unreachable-server", _study_run_unreachable, "cannot open the study storage"),
    Case("study-journal-in-a-folder-that-cannot-exist",
         lambda tmp, work, trained: ["study", "run", "--study", "s", "--n-trials", "1", "--config", str(work.config),
                                     "--set", f"study.root={tmp / 'studies'}", "--storage", "journal:/dev/null/s.log"],
         "cannot create the folder of the study storage"),
    Case("study-storage-of-an-unknown-kind",
         lambda tmp, work, trained: ["study", "show", "s", "--storage", "redis://127.0.0.1:1/0"],
         "is not a sqlite:///FILE, journal:FILE or postgresql://... URL"),
]

CASES = [*ARCH, *CONFIG, *CITYSCAPES, *LATENCY, *CHECKPOINTS, *STUDIES]


def test_the_matrix_has_one_case_per_id():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(case, tmp_path, work, trained, nas_cli, refused,
                                                               snapshot):
    argv = case.build(tmp_path, work, trained)
    before = snapshot(tmp_path)
    res = nas_cli(*argv, timeout=300)
    line = refused(res, case.message)
    assert "secret" not in line  # a storage password is never printed
    assert snapshot(tmp_path) == before, "the refused command wrote or changed files"
