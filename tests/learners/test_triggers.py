"""Trigger decisions on synthetic committee results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.triggers import (
    AdaptiveThreshold,
    Decision,
    EnergyThreshold,
    FixedThreshold,
    MinGap,
    RelativeThreshold,
    TrustWindow,
    trigger_from_config,
)

ATOMS = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms


def results(max_std: float | None = None, *, forces=None, forces_std=None, energy_std=0.0):
    """A committee results dict; ``max_force_std`` from ``forces_std`` unless given."""
    if forces_std is None:
        forces_std = np.zeros((4, 3))
        forces_std[0, 0] = max_std if max_std is not None else 0.0
    forces_std = np.asarray(forces_std, dtype=float)
    out = {
        "forces": np.asarray(forces if forces is not None else np.ones((4, 3)), dtype=float),
        "forces_std": forces_std,
        "max_force_std": float(np.linalg.norm(forces_std, axis=1).max()),
        "energy": -10.0,
        "energy_std": energy_std,
    }
    return out


def test_fixed_threshold():
    t = FixedThreshold(0.1)
    assert t.decide(0, ATOMS, results(0.05)) is Decision.SKIP
    assert t.decide(1, ATOMS, results(0.1)) is Decision.SKIP  # strictly above labels
    assert t.decide(2, ATOMS, results(0.15)) is Decision.LABEL
    assert t.decide(3, ATOMS, results(float("nan"))) is Decision.LABEL  # never trust NaN
    assert t.threshold == 0.1 and t.describe()["unit"] == "eV/A"


def test_max_force_std_is_the_largest_atom_norm():
    # each component 0.06: atom norm 0.06*sqrt(3) = 0.104 > 0.1, though no component is
    fstd = np.zeros((4, 3))
    fstd[2] = 0.06
    r = results(forces_std=fstd)
    del r["max_force_std"]  # computed from forces_std when the key is absent
    assert FixedThreshold(0.1).decide(0, ATOMS, r) is Decision.LABEL
    assert FixedThreshold(0.11).decide(0, ATOMS, r) is Decision.SKIP


def test_relative_threshold_uses_per_atom_ratio_and_floor():
    forces = np.array([[2.0, 0, 0], [0, 0.01, 0], [1.0, 0, 0], [1.0, 0, 0]])
    fstd = np.array([[0.3, 0, 0], [0, 0.02, 0], [0.05, 0, 0], [0.05, 0, 0]])
    r = results(forces=forces, forces_std=fstd)
    # ratios: 0.15, 2.0 (tiny force), 0.05, 0.05
    t = RelativeThreshold(0.2)
    assert t.relative_uncertainty(r) == pytest.approx(2.0)
    assert t.decide(0, ATOMS, r) is Decision.LABEL
    # a floor of 0.5 eV/A: atom 1 ratio 0.02/0.5 = 0.04; max is atom 0's 0.15
    floored = RelativeThreshold(0.2, floor=0.5)
    assert floored.relative_uncertainty(r) == pytest.approx(0.15)
    assert floored.decide(0, ATOMS, r) is Decision.SKIP
    assert RelativeThreshold(0.1, floor=0.5).decide(0, ATOMS, r) is Decision.LABEL
    # zero force with no floor: any uncertainty triggers, none does not
    zero = results(forces=np.zeros((4, 3)), forces_std=np.zeros((4, 3)))
    assert RelativeThreshold(0.2).decide(0, ATOMS, zero) is Decision.SKIP
    zero["forces_std"][3, 1] = 1e-6
    assert RelativeThreshold(0.2).decide(0, ATOMS, zero) is Decision.LABEL


def test_energy_threshold_is_per_atom():
    t = EnergyThreshold(0.01)  # eV/atom; 4 atoms
    assert t.decide(0, ATOMS, results(0.0, energy_std=0.039)) is Decision.SKIP
    assert t.decide(1, ATOMS, results(0.0, energy_std=0.041)) is Decision.LABEL
    assert t.describe()["unit"] == "eV/atom"


def test_trust_window_rejects_above_ceiling():
    t = TrustWindow(FixedThreshold(0.1), reject_above=1.0)
    assert t.decide(0, ATOMS, results(0.05)) is Decision.SKIP
    assert t.decide(1, ATOMS, results(0.5)) is Decision.LABEL
    assert t.decide(2, ATOMS, results(1.0)) is Decision.REJECT
    assert t.decide(3, ATOMS, results(float("inf"))) is Decision.REJECT
    assert t.threshold == 0.1


def test_min_gap_turns_close_labels_into_skips():
    t = MinGap(FixedThreshold(0.1), min_steps=3)
    hot = results(0.5)
    decisions = [t.decide(s, ATOMS, hot) for s in range(8)]
    assert decisions == [
        Decision.LABEL,
        Decision.SKIP,
        Decision.SKIP,
        Decision.LABEL,
        Decision.SKIP,
        Decision.SKIP,
        Decision.LABEL,
        Decision.SKIP,
    ]
    # a label the learner took on its own (e.g. after a rewind) also starts a gap
    t.notify_labelled(10, hot)
    assert t.decide(11, ATOMS, hot) is Decision.SKIP
    assert t.decide(13, ATOMS, hot) is Decision.LABEL
    # below threshold stays a skip whatever the gap
    assert t.decide(20, ATOMS, results(0.01)) is Decision.SKIP


def test_min_gap_never_delays_a_rejection():
    t = trigger_from_config(
        {"kind": "fixed", "max_force_std": 0.1, "min_gap": 5, "reject_above": 1.0}
    )
    assert t.decide(0, ATOMS, results(0.5)) is Decision.LABEL
    assert t.decide(1, ATOMS, results(0.5)) is Decision.SKIP
    assert t.decide(2, ATOMS, results(2.0)) is Decision.REJECT


def _run(trigger, sigmas, start=0):
    return [trigger.decide(start + i, ATOMS, results(s)) for i, s in enumerate(sigmas)]


def test_adaptive_threshold_follows_the_uncertainty_up_and_down():
    t = AdaptiveThreshold(
        factor=1.5, window=20, initial=0.2, min_threshold=0.001, max_threshold=10.0, warmup=5
    )
    assert t.threshold == 0.2
    rng = np.random.default_rng(0)
    _run(t, 0.05 * (1 + 0.1 * rng.standard_normal(40)))
    low = t.threshold
    assert low == pytest.approx(1.5 * 0.05, rel=0.1)
    # the MD reaches a new temperature: sigmas jump by 4x; the first new frames are labelled
    # (the threshold lags), then the threshold rises to follow
    hot = _run(t, 0.2 * (1 + 0.1 * rng.standard_normal(40)))
    assert hot[0] is Decision.LABEL
    high = t.threshold
    assert high == pytest.approx(1.5 * 0.2, rel=0.1)
    assert high > 3 * low
    # the model learnt: sigmas drop, and so does the threshold
    _run(t, 0.03 * (1 + 0.1 * rng.standard_normal(40)))
    assert t.threshold == pytest.approx(1.5 * 0.03, rel=0.1)
    assert t.threshold < low


def test_adaptive_threshold_keeps_labelling_a_steady_rise_beyond_its_maximum():
    t = AdaptiveThreshold(
        factor=1.2, window=10, initial=0.1, min_threshold=0.01, max_threshold=0.3, warmup=2
    )
    sigmas = np.linspace(0.05, 1.0, 200)
    decisions = _run(t, sigmas)
    assert t.threshold == 0.3
    above = sigmas > 0.3
    assert all(d is Decision.LABEL for d, a in zip(decisions, above, strict=True) if a)


def test_adaptive_threshold_floor_stops_labels_for_an_accurate_model():
    t = AdaptiveThreshold(factor=1.2, window=10, initial=0.1, min_threshold=0.05, warmup=2)
    rng = np.random.default_rng(1)
    decisions = _run(t, rng.uniform(0.001, 0.04, 100))
    assert t.threshold == 0.05
    assert Decision.LABEL not in decisions


def test_adaptive_threshold_follows_a_new_calibration_without_a_label_burst():
    t = AdaptiveThreshold(factor=1.5, window=20, initial=0.2, min_threshold=0.0, warmup=5)
    raw = 0.05 * (1 + 0.1 * np.random.default_rng(3).standard_normal(60))

    def step(i, alpha):
        r = dict(results(alpha * raw[i]), calibration=alpha)
        return t.decide(i, ATOMS, r)

    assert [step(i, 1.0) for i in range(30)].count(Decision.LABEL) <= 1
    # the calibration jumps from 1 to 2.2 (as after a first label): the uncertainty the MD
    # reports doubles, and so does the threshold; nothing new happened in the trajectory
    after = [step(i, 2.2) for i in range(30, 60)]
    assert after.count(Decision.LABEL) <= 1
    assert t.threshold == pytest.approx(1.5 * 2.2 * 0.05, rel=0.1)


def test_threshold_reports_the_value_used_by_the_last_decision():
    t = AdaptiveThreshold(factor=2.0, window=3, initial=0.5, min_threshold=0.0, warmup=1)
    assert t.decide(0, ATOMS, results(0.1)) is Decision.SKIP  # initial 0.5 applied
    assert t.threshold == 0.5
    assert t.decide(1, ATOMS, results(0.25)) is Decision.LABEL  # 2 * 0.1 = 0.2 applied
    assert t.threshold == pytest.approx(0.2)


def test_state_round_trip_resumes_exactly():
    cfg = {
        "kind": "adaptive",
        "factor": 1.3,
        "window": 7,
        "min_gap": 4,
        "reject_above": 2.0,
        "min_threshold": 0.0,
    }
    a = trigger_from_config(cfg)
    rng = np.random.default_rng(2)
    first = rng.uniform(0.0, 1.0, 30)
    _run(a, first)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    b = trigger_from_config(cfg)
    b.load_state_dict(state)
    assert b.threshold == a.threshold
    rest = rng.uniform(0.0, 1.5, 40)
    assert _run(a, rest, start=30) == _run(b, rest, start=30)
    assert a.threshold == b.threshold
    b.load_state_dict({})  # an empty state (no checkpoint) leaves the trigger as is
    assert b.threshold == a.threshold


def test_state_of_another_kind_is_refused():
    with pytest.raises(ConfigError, match="'fixed'"):
        AdaptiveThreshold().load_state_dict(FixedThreshold(0.1).state_dict())


def test_config_builds_the_composition():
    t = trigger_from_config({"kind": "adaptive", "factor": 1.5, "min_gap": 5, "reject_above": 2.0})
    assert isinstance(t, TrustWindow) and t.reject_above == 2.0
    assert isinstance(t.inner, MinGap) and t.inner.min_steps == 5
    assert isinstance(t.inner.inner, AdaptiveThreshold) and t.inner.inner.factor == 1.5
    d = json.loads(json.dumps(t.describe()))
    assert d["inner"]["inner"]["kind"] == "adaptive"
    assert isinstance(trigger_from_config({"kind": "fixed", "max_force_std": 0.2}), FixedThreshold)
    assert trigger_from_config({"kind": "energy", "energy_std_per_atom": 0.002}).threshold == 0.002
    rel = trigger_from_config({"kind": "relative", "ratio": 0.3, "floor": 0.1})
    assert rel.describe() == {"kind": "relative", "ratio": 0.3, "floor": 0.1, "unit": "1"}


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"factor": 1.2}, "trigger.kind"),
        ({"kind": "magic"}, "'magic'"),
        ({"kind": "adaptive", "factr": 1.2}, "trigger.factr"),
        ({"kind": "adaptive", "factor": "big"}, "trigger.factor"),
        ({"kind": "adaptive", "window": 2.5}, "trigger.window"),
        ({"kind": "adaptive", "min_gap": True}, "trigger.min_gap"),
        ({"kind": "adaptive", "min_gap": 0}, "trigger.min_gap"),
        ({"kind": "adaptive", "factor": 0.5}, "factor"),
        ({"kind": "fixed"}, "trigger.max_force_std"),
        ({"kind": "fixed", "max_force_std": -1.0}, "max_force_std"),
        ({"kind": "fixed", "max_force_std": 0.1, "reject_above": "x"}, "trigger.reject_above"),
        ({"kind": "energy", "max_force_std": 0.1}, "trigger.max_force_std"),
        ({"kind": "adaptive", "min_threshold": 2.0, "max_threshold": 1.0}, "min_threshold"),
    ],
)
def test_config_errors_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        trigger_from_config(cfg)
