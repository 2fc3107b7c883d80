"""Malformed architecture files fail on load with an error naming the field, and the CLI prints one line."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from search_spaces.arch import Architecture, ArchitectureError, Branch, Cell, load_architecture
from search_spaces.fasterseg_import import import_fasterseg
from search_spaces.registry import space_spec


def _valid() -> dict:
    head = 2 / 3
    b32 = Branch((Cell(8, "conv", 0.5), Cell(8, "skip", 0.5), Cell(16, "conv_2x", 1.0), Cell(32, "zoomed_conv", head)),
                 ("bilinear", "pixel_shuffle"))
    b16 = Branch((Cell(8, "conv", 0.5), Cell(16, "conv", head)), ("bilinear",))
    arch = Architecture(space=space_spec("tiny"), branches=(b32, b16), stem_width=0.5, head_width=head)
    return arch.to_dict()


def _drop(key):
    def f(d):
        del d[key]
    return f


BAD = {
    "schema_version": (lambda d: d.update(schema_version=99), "schema_version"),
    "unknown_op": (lambda d: d["branches"][0]["cells"][1].update(op="conv_9x9"), "branches[0].cells[1].op"),
    "width_outside_set": (lambda d: d["branches"][0]["cells"][0].update(width=0.4), "branches[0].cells[0].width"),
    "scale_jump_8_to_32": (lambda d: d["branches"][0]["cells"][2].update(scale=32), "branches[0].cells[2].scale"),
    "missing_head_width": (_drop("head_width"), "head_width"),
    "missing_space_fch": (lambda d: d["space"].pop("fch"), "space.fch"),
    "missing_cell_op": (lambda d: d["branches"][1]["cells"][0].pop("op"), "branches[1].cells[0].op"),
    "wrong_type": (lambda d: d.update(stem_width="wide"), "stem_width"),
    "upsampler_count": (lambda d: d["branches"][1].update(upsample=[]), "branches[1].upsample"),
    "unknown_upsampler": (lambda d: d.update(final_upsample="nearest"), "final_upsample"),
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_valid_file_loads(tmp_path):
    arch = load_architecture(_write(tmp_path, _valid()))
    assert arch.scales == (32, 16)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_field_is_named(case, tmp_path):
    mutate, field = BAD[case]
    data = copy.deepcopy(_valid())
    mutate(data)
    with pytest.raises(ArchitectureError, match=rf"field {field.replace('[', '.').replace(']', '.')}"):
        load_architecture(_write(tmp_path, data))


def test_truncated_json(tmp_path):
    text = json.dumps(_valid())
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        load_architecture(_write(tmp_path, text[: len(text) // 2]))


def test_top_level_not_an_object(tmp_path):
    with pytest.raises(ArchitectureError, match="top level"):
        load_architecture(_write(tmp_path, "[1, 2]"))


def test_missing_file(tmp_path):
    with pytest.raises(ArchitectureError, match="not found"):
        load_architecture(tmp_path / "nope.json")


def _nas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("case", "action"),
    [("truncated", "show"), ("unknown_op", "show"), ("scale_jump_8_to_32", "show"), ("missing_head_width", "draw")],
)
def test_cli_bad_file_one_line_exit_2(case, action, tmp_path):
    if case == "truncated":
        path = _write(tmp_path, json.dumps(_valid())[:100])
    else:
        data = copy.deepcopy(_valid())
        BAD[case][0](data)
        path = _write(tmp_path, data)
    res = _nas("arch", action, path)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "not valid JSON" in res.stderr if case == "truncated" else BAD[case][1] in res.stderr


def test_cli_bad_input_size(tmp_path):
    res = _nas("arch", "show", _write(tmp_path, _valid()), "--input", "1024by2048")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "--input" in res.stderr


def test_cli_draw_writes_png(tmp_path):
    path = _write(tmp_path, _valid())
    res = _nas("arch", "draw", path, "--out", str(tmp_path / "d.png"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    assert "branch 1/32" in res.stdout and "branch 1/16" in res.stdout


def _ref() -> dict:
    return {
        "num_classes": 19, "layers": 16, "Fch": 12, "width_choices": [1 / 3, 0.5, 2 / 3, 5 / 6, 1.0],
        "stem_width": 2 / 3, "head_width": 2 / 3, "kept_branches": ["1/32", "1/8"],
        "branches": {
            "1/32": {"ops": ["conv", "conv_downup", "conv_2x_downup"], "scales": [8, 16, 32], "widths": [0.5, 1.0]},
            "1/8": {"ops": ["conv", "skip"], "scales": [8, 8], "widths": [0.5]},
        },
    }


def test_import_fasterseg_minimal():
    arch = import_fasterseg(_ref())
    assert [c.op for c in arch.branches[0].cells] == ["conv", "zoomed_conv", "zoomed_conv_2x"]
    assert arch.branches[0].cells[-1].width == pytest.approx(2 / 3)
    assert arch.branches[1].upsample == ()
    assert arch.meta == {"source": "FasterSeg arch_1 import"}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("Fch"), "Fch"),
        (lambda r: r["branches"]["1/32"]["ops"].__setitem__(1, "conv_5x5"), "branches.1/32.ops[1]"),
        (lambda r: r["branches"]["1/32"].update(widths=[0.5]), "branches.1/32.widths"),
        (lambda r: r["branches"]["1/32"].update(scales=[8, 32, 32]), "branches[0].cells[1].scale"),
        (lambda r: r.update(kept_branches=["1/32", "1/64"]), "branches.1/64"),
        (lambda r: r.update(kept_branches=["32"]), "kept_branches[0]"),
    ],
)
def test_import_fasterseg_malformed(mutate, field):
    ref = _ref()
    mutate(ref)
    with pytest.raises(ArchitectureError) as err:
        import_fasterseg(ref)
    assert f"field {field}" in str(err.value)
