"""Config system: defaults, YAML differences, --set overrides, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from nas.config import ExperimentConfig, apply_overrides, config_hash, dump_yaml, load_config
from nas.errors import ConfigError


def test_defaults_are_frozen_dataclasses():
    cfg = load_config()
    assert cfg == ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.run.seed = 3  # type: ignore[misc]


def test_yaml_holds_differences_only(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: 4\n  image_size: [64, 128]\n")
    cfg = load_config(path)
    assert cfg.data.batch_size == 4
    assert cfg.data.image_size == (64, 128)
    assert cfg.data.num_train == ExperimentConfig().data.num_train


def test_overrides_are_type_checked_and_converted():
    cfg = apply_overrides(ExperimentConfig(), ["data.batch_size=2", "run.name=x", "space.widths=[0.5, 1]"])
    assert cfg.data.batch_size == 2 and cfg.run.name == "x"
    assert cfg.space.widths == (0.5, 1.0)
    cfg = apply_overrides(cfg, ["space.layers=null", "data.flip=false"])
    assert cfg.space.layers is None and cfg.data.flip is False


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.nope=1", "unknown config key 'data.nope'"),
        ("nope.x=1", "unknown config key 'nope'"),
        ("data.batch_size=two", "data.batch_size"),
        ("data.batch_size=1.5", "data.batch_size"),
        ("data.flip=1", "data.flip"),
        ("data.name=imagenet", "data.name"),
        ("data.image_size=[1,2,3]", "data.image_size"),
        ("justakey", "key=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, fragment):
    with pytest.raises(ConfigError) as info:
        apply_overrides(ExperimentConfig(), [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    bad.write_text("data:\n  typo_key: 1\n")
    with pytest.raises(ConfigError, match="data.typo_key"):
        load_config(bad)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), ["data.batch_size=3", "space.name=tiny"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg
    assert config_hash(load_config(path)) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(ExperimentConfig())
