"""Fuzzing the two parsers of untrusted text: the architecture-JSON loader (`search_spaces.arch`) and the config
parser (`nas.config`). Any input either loads or fails with the documented error type (`ArchitectureError`,
`ConfigError`, both :class:`~nas.errors.UserError`), never another exception."""

from __future__ import annotations

import copy
import json
import string
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.config import ExperimentConfig, apply_overrides, config_hash, load_config, to_dict
from nas.errors import ConfigError
from search_spaces.arch import Architecture, ArchitectureError, load_architecture
from search_spaces.ops import OPS
from search_spaces.random_arch import random_architecture
from search_spaces.registry import space_spec
from search_spaces.upsample import UPSAMPLERS

# Examples per property: enough to find the crashes fixed with these tests in seconds, not minutes.
EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=16)
# Values close to valid ones, so that mutations get past the first checks and reach the deeper ones.
_near = st.sampled_from([*OPS, *UPSAMPLERS, "student", "teacher", "tiny", "fasterseg", 8, 16, 32, 64, 0, -1, 1, 2,
                         1.0, 0.5, 1 / 3, 2 / 3, 0.0, 1.5, [8, 16, 32], [8, 16], [], {}, {"mode": "pixel"},
                         {"mode": "tutor", "tutor_path": 4}, "1/8", "1/16", "1/32"])


def _valid_arch(seed: int) -> dict[str, Any]:
    arch = random_architecture(space_spec("tiny", num_classes=11), np.random.default_rng(seed))
    return arch.to_dict()


_BASES = [_valid_arch(seed) for seed in range(4)]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key / index path inside a JSON value (the root included)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_archs(draw: st.DrawFn) -> Any:
    """A valid architecture dict with 1–3 edits: a value replaced (random or near-valid) or a key removed."""
    data = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            return draw(json_values)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(_near | json_values))  # _near's lists and dicts are shared
    return data


def _check_arch(data: Any) -> None:
    try:
        arch = Architecture.from_dict(data)
    except ArchitectureError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert Architecture.from_dict(arch.to_dict()).to_dict()["branches"] == arch.to_dict()["branches"]


def test_the_valid_bases_load():
    for base in _BASES:
        assert isinstance(Architecture.from_dict(base), Architecture)


@FUZZ
@given(json_values)
def test_any_json_value_loads_or_is_an_architecture_error(data):
    _check_arch(data)


@FUZZ
@given(mutated_archs())
def test_mutated_architectures_load_or_are_architecture_errors(data):
    _check_arch(data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 mutated_archs().map(lambda d: json.dumps(d).encode()),
                 mutated_archs().map(lambda d: json.dumps(d).encode()).flatmap(
                     lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))))  # truncated files
def test_architecture_files_load_or_are_architecture_errors(scratch, blob):
    path = scratch / "arch.json"
    path.write_bytes(blob)
    try:
        load_architecture(path)
    except ArchitectureError as exc:
        assert "\n" not in str(exc)


# --------------------------------------------------------------------------- config

_DEFAULTS = to_dict(ExperimentConfig())
_SECTIONS = sorted(_DEFAULTS)
_keys = st.sampled_from([f"{s}.{k}" for s in _SECTIONS for k in _DEFAULTS[s]])
_config_values = _near | json_values | st.sampled_from([[64, 128], [1, 2, 3], ["pixel"], "cpu", "2020-13-45", "0x_"])


@st.composite
def config_dicts(draw: st.DrawFn) -> Any:
    """Config-file contents: sections with known and unknown keys, right and wrong value types."""
    out: dict[Any, Any] = {}
    for key in draw(st.lists(_keys, max_size=5)):
        section, name = key.split(".")
        out.setdefault(section, {})[name] = draw(_config_values)
    if draw(st.booleans()):
        out[draw(st.text(max_size=6) | st.integers() | st.none())] = draw(json_values)
    if draw(st.booleans()) and out:
        section = draw(st.sampled_from(sorted(out, key=str)))
        out[section] = draw(json_values)
    return out


def _check_config(load) -> None:
    try:
        cfg = load()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(cfg, ExperimentConfig)
    config_hash(cfg)


@FUZZ
@given(st.one_of(config_dicts().map(lambda d: yaml.safe_dump(d).encode()),
                 st.binary(max_size=200),
                 st.text(alphabet=string.printable, max_size=200).map(str.encode),
                 config_dicts().map(lambda d: yaml.safe_dump(d).encode()).flatmap(
                     lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))))
def test_config_files_load_or_are_config_errors(scratch, blob):
    path = scratch / "config.yaml"
    path.write_bytes(blob)
    _check_config(lambda: load_config(path))


# Raw `--set` values YAML reads as something other than a plain scalar, or cannot build.
_RAW = ["2020-13-45", "2020-02-30 10:00:00", "0x_", "1" * 400, "[" * 2000, "{a: [1, {b: 2}]}", "!!python/name:os.system",
        ".nan", "-.inf", "~", "", "[64, 128]", "yes"]
_override = st.one_of(
    st.tuples(_keys, _config_values).map(lambda kv: f"{kv[0]}={yaml.safe_dump(kv[1], default_flow_style=True).strip()}"),
    st.tuples(_keys, st.text(max_size=20) | st.sampled_from(_RAW)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=30),
)


@FUZZ
@given(st.lists(_override, max_size=4))
def test_overrides_apply_or_are_config_errors(overrides):
    _check_config(lambda: apply_overrides(ExperimentConfig(), overrides))
