"""The accuracy-target trigger: label only where the predicted force error passes the target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.triggers import Decision, TargetError, trigger_from_config

ATOMS = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms


def _results(component_sigma: float, grade: float | None = None) -> dict:
    fstd = np.zeros((4, 3))
    fstd[1] = component_sigma  # one atom with this sigma on every component
    out = {
        "forces": np.ones((4, 3)),
        "forces_std": fstd,
        "max_force_std": float(np.linalg.norm(fstd, axis=1).max()),
        "energy_std": 0.0,
    }
    if grade is not None:
        out["max_extrapolation_grade"] = grade
    return out


def test_predicted_error_is_the_rms_of_an_atoms_component_sigmas():
    t = TargetError(force_error=0.05)
    # an atom whose three component sigmas are 0.049 eV/A is predicted to err by 0.049
    assert t.decide(0, ATOMS, _results(0.049)) is Decision.SKIP
    assert t.decide(1, ATOMS, _results(0.051)) is Decision.LABEL
    assert t.decide(2, ATOMS, _results(float("nan"))) is Decision.LABEL


def test_extrapolation_grade_labels_even_when_sigma_is_small():
    t = TargetError(force_error=0.05, max_grade=3.0)
    assert t.decide(0, ATOMS, _results(0.01, grade=2.0)) is Decision.SKIP
    assert t.decide(1, ATOMS, _results(0.01, grade=4.0)) is Decision.LABEL
    # no active set: sigma alone decides
    assert t.decide(2, ATOMS, _results(0.01)) is Decision.SKIP
    assert TargetError(0.05, max_grade=None).decide(3, ATOMS, _results(0.01, 9.0)) is (
        Decision.SKIP
    )


def test_labelling_stops_once_the_model_meets_the_target():
    """Over a run whose predicted error shrinks with each label, labels stop at the target."""
    t = TargetError(force_error=0.05)
    sigma, labels = 0.3, 0
    for step in range(2000):
        if t.decide(step, ATOMS, _results(sigma)) is Decision.LABEL:
            labels += 1
            sigma *= 0.7  # each label improves the model
    assert sigma <= 0.05 < sigma / 0.7
    assert labels == int(np.ceil(np.log(0.05 / 0.3) / np.log(0.7)))


def test_config_and_errors():
    t = trigger_from_config({"kind": "target", "force_error": 0.03, "min_gap": 2})
    assert t.inner.force_error == 0.03 and t.threshold == 0.03
    d = json.loads(json.dumps(t.describe()))
    assert d["inner"] == {"kind": "target", "force_error": 0.03, "max_grade": 100.0,
                          "atom_factor": 3.0, "unit": "eV/A"}
    assert isinstance(trigger_from_config({"kind": "target"}), TargetError)
    for bad, key in (({"force_error": 0.0}, "force_error"), ({"force_error": -1}, "force_error"),
                     ({"force_error": "small"}, "trigger.force_error"),
                     ({"max_grade": 0}, "max_grade"), ({"force_err": 0.1}, "trigger.force_err")):
        with pytest.raises(ConfigError, match=key):
            trigger_from_config({"kind": "target", **bad})
