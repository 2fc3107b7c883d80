"""The hyperparameter space (YAML → parameters → config overrides), trial seeds, storage URLs, artifact names."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest

from nas.config import ExperimentConfig, apply_overrides
from nas.errors import UserError
from nas.studies import AtomicArtifactStore, SearchSpace, load_space, safe_artifact_name, trial_seed
from nas.studies.storage import artifact_dir, describe_url, open_storage, storage_file

REPO = Path(__file__).resolve().parents[2]


def _cfg(space: SearchSpace, values: dict) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), space.overrides(values))


def test_shipped_space_file_is_the_built_in_space_and_fits_the_config():
    shipped = load_space(REPO / "experiments" / "configs" / "study_space.yaml")
    assert shipped.to_dict() == SearchSpace().to_dict()
    shipped.check(ExperimentConfig())


def test_sampled_values_become_config_overrides():
    space = SearchSpace()
    values = {p.name: p.probe_values()[0] for p in space.params}
    values.update(latency_target_ms=12.5, kd="pixel+pairwise", tutor="4", upsample="pixel_shuffle", arch_lr=2e-3,
                  tau_start=4.0, tau_end=0.5, kd_weight=2.0)
    cfg = _cfg(space, values)
    assert cfg.search.latency_target_ms == 12.5 and cfg.space.upsample == "pixel_shuffle"
    assert cfg.distill.losses == ("pixel", "pairwise") and cfg.distill.pixel_weight == 2.0
    assert (cfg.search.distill, cfg.search.tutor_path, cfg.distill.tutor) == ("tutor", 4, "auto")
    assert (cfg.search.arch_lr, cfg.search.tau_start, cfg.search.tau_end) == (2e-3, 4.0, 0.5)
    no_kd = _cfg(space, {**values, "kd": "none"})  # a tutor needs KD: without it, none
    assert no_kd.distill.losses == () and no_kd.search.distill == "none" and no_kd.distill.tutor == "none"
    plain = _cfg(space, {**values, "tutor": "none", "kd": "pixel"})
    assert plain.search.distill == "pixel" and plain.distill.tutor == "none"


def test_a_yaml_file_fixes_replaces_and_adds_parameters(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("upsample: bilinear\n"
                    "arch_lr: {low: 0.001, high: 0.002}\n"
                    "train_epochs: {key: train.epochs, low: 1, high: 3}\n")
    space = load_space(path)
    by_name = {p.name: p for p in space.params}
    assert by_name["upsample"].kind == "fixed" and by_name["upsample"].value == "bilinear"
    assert by_name["arch_lr"].kind == "float" and by_name["arch_lr"].log  # keeps the built-in's log scale
    assert by_name["train_epochs"].kind == "int" and by_name["train_epochs"].key == "train.epochs"
    space.check(ExperimentConfig())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    values = space.suggest(trial)
    assert values["upsample"] == "bilinear" and "upsample" not in trial.params  # fixed: not searched
    assert 1 <= values["train_epochs"] <= 3 and 0.001 <= values["arch_lr"] <= 0.002
    cfg = _cfg(space, values)
    assert cfg.train.epochs == values["train_epochs"] and cfg.space.upsample == "bilinear"


@pytest.mark.parametrize("text, message", [
    ("nope: 3\n", "'nope' is not a built-in parameter"),
    ("arch_lr: {low: 0.1, high: 0.01}\n", "needs low <= high"),
    ("arch_lr: {low: 0.0, high: 0.01, log: true}\n", "low > 0"),
    ("kd: {choices: [pixel, hinton]}\n", "unknown KD loss 'hinton'"),
    ("upsample: {choices: [bicubic]}\n", "upsample"),
    ("extra: {key: search.nope, low: 1, high: 2}\n", "unknown config key 'search.nope'"),
    ("arch_lr: {low: 0.001, hgih: 0.01}\n", "unknown field 'hgih'"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_a_malformed_space_is_one_user_error_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_space(path).check(ExperimentConfig())
    assert message in str(info.value) and "\n" not in str(info.value)


def test_trial_seeds_are_deterministic_and_distinct():
    seeds = [trial_seed(7, n) for n in range(50)]
    assert seeds == [trial_seed(7, n) for n in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**31 for s in seeds)
    assert trial_seed(8, 0) != trial_seed(7, 0)


@pytest.mark.parametrize("name", ["../model.pt", "/etc/passwd", "a/b.json", ".hidden", "..", "", "x" * 200,
                                  "model.pt\x00", "evil\\..\\x"])
def test_artifact_names_with_paths_are_refused(name):
    with pytest.raises(UserError, match="refusing artifact name"):
        safe_artifact_name(name)


def test_artifact_store_writes_atomically_and_stays_in_its_folder(tmp_path):
    store = AtomicArtifactStore(tmp_path / "new" / "artifacts")  # creates its folder
    store.write("abc-123", io.BytesIO(b"payload"))
    with store.open_reader("abc-123") as fh:
        assert fh.read() == b"payload"
    assert sorted(p.name for p in (tmp_path / "new" / "artifacts").iterdir()) == ["abc-123"]
    for bad in ("../outside", "/tmp/outside"):
        with pytest.raises(UserError, match="refusing artifact id"):
            store.write(bad, io.BytesIO(b"x"))
    assert not (tmp_path / "new" / "outside").exists()


def test_storage_urls(tmp_path):
    assert storage_file(f"sqlite:///{tmp_path}/s.db") == tmp_path / "s.db"
    assert storage_file(f"journal:{tmp_path}/s.log") == tmp_path / "s.log"
    assert storage_file("postgresql+psycopg2://u@h/db") is None
    assert artifact_dir(f"sqlite:///{tmp_path}/s.db", None, "runs") == tmp_path / "s_artifacts"
    assert artifact_dir("postgresql://u@h/db", None, tmp_path) == tmp_path / "artifacts"
    assert "secret" not in describe_url("postgresql+psycopg2://nas:secret@db.example:5432/nas")
    with pytest.raises(UserError, match="no study storage at"):
        open_storage(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(UserError, match="not a sqlite"):
        open_storage("redis://localhost/0")
    with pytest.raises(UserError, match="not memory"):
        open_storage("sqlite:///:memory:", create=True)
