"""Reading configuration files: a key given twice is an error, not the last value."""

from __future__ import annotations

import pytest

from potlearn_ase.config import read_config_file
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.run import OTFRunConfig


def test_duplicate_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "otf.yaml"
    path.write_text("md:\n  steps: 1500\n  timestep_fs: 1.0\n  steps: 10\nrun_dir: r\n")
    with pytest.raises(ConfigError) as err:
        OTFRunConfig.from_file(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and "'steps'" in msg and "line 2" in msg


def test_duplicate_top_level_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: a\nprogress: false\nrun_dir: b\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'run_dir'"):
        read_config_file(path)


def test_same_key_in_different_mappings_and_merge_override_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "base: &b {steps: 5, seed: 1}\n"
        "md:\n  <<: *b\n  steps: 10\n"
        "other: {steps: 3}\n"
    )
    data = read_config_file(path)
    assert data["md"] == {"steps": 10, "seed": 1}
    assert data["other"] == {"steps": 3}


@pytest.mark.parametrize(
    ("kind", "text", "key"),
    [
        ("otf", "md:\n  steps: many\n", "md.steps"),
        ("lammps", "settings:\n  checkpoint_evry: 3\n", "settings.checkpoint_evry"),
        ("ipi", "run_dirr: here\n", "run_dirr"),
        ("hyperopt", "n_trials: -\n", "n_trials"),
    ],
)
def test_every_configuration_file_names_file_and_key(tmp_path, kind, text, key):
    from potlearn_ase.analysis.hyperopt import HyperoptConfig
    from potlearn_ase.config import load_config
    from potlearn_ase.engines.ipi.learning import IPILearnConfig
    from potlearn_ase.engines.lammps.learning import LammpsLearnConfig
    from potlearn_ase.learners.run import OTFRunConfig

    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    cls = {"otf": OTFRunConfig, "lammps": LammpsLearnConfig, "ipi": IPILearnConfig,
           "hyperopt": HyperoptConfig}[kind]
    with pytest.raises(ConfigError) as err:
        load_config(cls, path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_model_section_nests_descriptor_fit_and_neural_and_reads_flat_keys():
    from potlearn_ase.descriptors import ACEConfig
    from potlearn_ase.models import LinearFitConfig

    cfg = OTFRunConfig.from_dict(
        {"model": {"descriptor": {"cutoff": 4.5, "n_radial": 4}, "fit": {"n_members": 4}}}
    )
    assert cfg.model.descriptor == ACEConfig(cutoff=4.5, n_radial=4)
    assert cfg.model.fit == LinearFitConfig(n_members=4) and cfg.model.n_members == 4
    with pytest.warns(DeprecationWarning, match="cutoff -> descriptor.cutoff"):
        old = OTFRunConfig.from_dict({"model": {"cutoff": 4.5, "n_radial": 4, "n_members": 4,
                                                "epochs": 7}})
    assert old.model.descriptor == cfg.model.descriptor and old.model.fit == cfg.model.fit
    assert old.model.neural.n_members == 4 and old.model.neural.epochs == 7
    for bad, key in (({"descriptor": {"cutof": 4.0}}, "model.descriptor.cutof"),
                     ({"fit": {"energy_weight": "x"}}, "model.fit.energy_weight"),
                     ({"fit": {"energy_weight": -1.0}}, "energy_weight")):
        with pytest.raises(ConfigError, match=key):
            OTFRunConfig.from_dict({"model": bad})
