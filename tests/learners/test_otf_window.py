"""Labels worth their cost: the look-ahead window, the MD's start, honest sigma from the first
label, the misfit set apart, and the accuracy target as the default trigger."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read
from ase.md.langevin import Langevin

from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.cli import DEMO_CONFIG
from potlearn_ase.data.generate import thermalize
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner, OTFConfig
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.run import run_otf
from potlearn_ase.learners.triggers import Decision, FixedThreshold, TargetError
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.base import committee_results
from potlearn_ase.models.calibration import cross_validated_factors, fit_error_model

FIT = LinearFitConfig(n_members=8, energy_weight=30.0, force_weight=1.0, stress_weight=1.0)


def _labelled(atoms):
    ref = atoms.copy()
    ref.calc = EMT()
    out = atoms.copy()
    out.calc = SinglePointCalculator(
        out, energy=ref.get_potential_energy(), forces=ref.get_forces(), stress=ref.get_stress()
    )
    return out


def _rattled(seed, amplitude=0.05):
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    a.rattle(amplitude, seed=seed)
    return _labelled(a)


@dataclass(eq=False)
class Scripted(FixedThreshold):
    """Asks for labels from its ``fire``-th call on, one per entry of ``script``, which
    ranks those candidates."""

    fire: int = 3
    script: tuple[float, ...] = ()
    reject: int = 0  # the call that is rejected (0: none)

    def __post_init__(self):
        super().__post_init__()
        self.calls = 0
        self.ranked = 0

    def decide(self, step, atoms, results):
        self.calls += 1
        if self.calls == self.reject:
            return Decision.REJECT
        wanted = self.fire <= self.calls < self.fire + len(self.script)
        return Decision.LABEL if wanted else Decision.SKIP

    def priority(self, results):
        self.ranked += 1
        return self.script[self.ranked - 1] if self.ranked <= len(self.script) else 0.0


def _learner(tmp_path, trigger, lookahead):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    start = [_rattled(1)]
    model = fit_linear(desc, start, FIT, rng=0)
    store = LabelStore(tmp_path / "labels.h5")
    store.append(start[0], provenance={"reference": "emt", "engine": "initial"})
    return OnTheFlyLearner(
        CommitteeCalculator(model=model),
        Reference.from_spec("emt"),
        store,
        trigger,
        run_dir=tmp_path,
        settings=OTFConfig(lookahead=lookahead),
    )


def _hot_md(learner, rng=None, **attach):
    """32 atoms of fcc Cu at 600 K under Langevin MD, watched by ``learner``."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    thermalize(atoms, 600, np.random.default_rng(0))
    extra = {} if rng is None else {"rng": rng}
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=600, friction=0.02, fixcm=False, **extra)
    learner.attach(dyn, **attach)
    return atoms, dyn


def test_window_labels_its_most_uncertain_structure_and_the_md_goes_on_from_it(tmp_path):
    # the third evaluation fires; of the four candidates the second is ranked highest
    trigger = Scripted(1.0, fire=3, script=(0.5, 2.0, 1.0, 0.2))
    learner = _learner(tmp_path, trigger, lookahead=4)
    atoms, dyn = _hot_md(learner, np.random.default_rng(1), trajectory=tmp_path / "md.traj",
                         interval=1)
    seen = []  # (evaluated positions, results) of every learner step
    step = learner.step
    learner.step = lambda a, **kw: seen.append((a.positions.copy(), step(a, **kw))) or seen[-1][1]
    kept = []  # (md step, positions) as the observers see them
    dyn.attach(lambda: kept.append((dyn.nsteps, atoms.positions.copy())), interval=1)
    dyn.run(10)

    assert learner.n_reference_calls == 1 and len(learner.store) == 2
    labelled, prov = learner.store[1], learner.store.provenance(1)
    # the initial evaluation is step 0; the trigger fired on the third evaluation (MD step 2),
    # and the candidates are MD steps 2, 3, 4, 5: the second of them, step 3, was labelled
    assert prov["md_step"] == 3
    np.testing.assert_allclose(labelled.positions, seen[3][0], atol=1e-12)
    # the MD was rewound to it: after step 4 the observers see step 3's state again (the
    # learner's observer rewinds within step 5, before the others run)
    steps = [s for s, _ in kept]
    assert steps[:7] == [0, 1, 2, 3, 4, 3, 4]
    np.testing.assert_allclose(kept[5][1], labelled.positions, atol=1e-12)
    # the next evaluation is of the labelled structure, and it is driven by the reference
    j = next(k for k in range(6, len(seen)) if np.array_equal(seen[k][0], labelled.positions))
    results, decision = seen[j][1]
    np.testing.assert_allclose(results["forces"], labelled.get_forces(), atol=1e-12)
    assert results["labelled"] and decision is Decision.SKIP
    # ten kept steps, and the trajectory holds one frame per kept step, none of those undone
    assert dyn.nsteps == 10 and learner.state.md_step == 10
    traj = read(tmp_path / "md.traj", ":")
    assert len(traj) == 11
    np.testing.assert_allclose(traj[3].positions, labelled.positions, atol=1e-12)
    learner.store.close()


def test_a_candidate_far_out_of_the_committees_depth_closes_the_window(tmp_path):
    trigger = Scripted(1.0, fire=3, script=(0.5, 4.0))  # 4 > lookahead_stop 3
    learner = _learner(tmp_path, trigger, lookahead=4)
    atoms, dyn = _hot_md(learner)
    kept = []
    dyn.attach(lambda: kept.append(dyn.nsteps), interval=1)
    dyn.run(8)
    assert learner.n_reference_calls == 1 and learner.store.provenance(1)["md_step"] == 3
    assert kept == list(range(9)) and trigger.ranked == 2  # no rewind: step 3 was current
    learner.store.close()


def test_a_rejected_step_labels_the_best_candidate_so_far_and_rewinds_to_it(tmp_path):
    # candidates at MD steps 2 and 3; step 4 is rejected: step 3, the best, is labelled
    trigger = Scripted(1.0, fire=3, script=(0.5, 2.0), reject=5)
    learner = _learner(tmp_path, trigger, lookahead=4)
    atoms, dyn = _hot_md(learner)
    kept = []
    dyn.attach(lambda: kept.append((dyn.nsteps, atoms.positions.copy())), interval=1)
    dyn.run(8)
    assert learner.n_reference_calls == 1 and learner.store.provenance(1)["md_step"] == 3
    assert learner.state.n_rejects == 1
    # the rejected step 4 is undone: the MD goes on from step 3, the labelled structure
    assert [k for k, _ in kept][:6] == [0, 1, 2, 3, 3, 4]
    np.testing.assert_allclose(kept[4][1], learner.store[1].positions, atol=1e-12)
    assert dyn.nsteps == 8
    learner.store.close()


def test_a_window_open_at_the_end_of_a_run_is_labelled(tmp_path):
    trigger = Scripted(1.0, fire=3, script=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
    learner = _learner(tmp_path, trigger, lookahead=50)
    atoms, dyn = _hot_md(learner)
    dyn.run(6)
    assert learner.n_reference_calls == 0
    learner.flush()
    assert learner.n_reference_calls == 1 and learner.store.provenance(1)["md_step"] == 6
    learner.store.close()


def test_atom_folds_give_an_honest_sigma_from_one_structure():
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    train = [_rattled(1)]
    model = fit_linear(desc, train, FIT, rng=0)
    alpha = cross_validated_factors(model, train, unit="atoms", folds=8)["forces"]
    inside = []
    for seed in (11, 12, 13, 14):  # independent structures of the same kind
        test = _rattled(seed)
        r = committee_results(model.predict(test, forces=True), alpha)
        inside.append(np.abs(r["forces"] - test.get_forces()) <= r["forces_std"])
    coverage = float(np.mean(inside))
    assert 0.5 <= coverage <= 0.9, (alpha, coverage)
    with pytest.raises(ValueError, match="structures"):
        cross_validated_factors(model, train)  # structure folds need two structures


def test_error_model_sets_the_misfit_apart():
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.01, 0.1, 20000)
    noise = 0.1
    err = rng.standard_normal(spread.size) * np.sqrt((2.0 * spread) ** 2 + noise**2)
    alpha, misfit = fit_error_model(err, spread)
    assert alpha == pytest.approx(2.0, rel=0.1) and misfit == pytest.approx(noise, rel=0.1)
    z = np.abs(err) / np.sqrt((alpha * spread) ** 2 + misfit**2)
    assert np.mean(z <= 1) == pytest.approx(0.683, abs=0.01)
    # the plain factor would absorb the misfit into the spread
    assert np.quantile(np.abs(err) / spread, 0.683) > 3.0
    # errors the spread does not rank: the posterior's own scale is kept, the misfit takes
    # the rest
    flat = rng.standard_normal(spread.size) * noise
    alpha, misfit = fit_error_model(flat, spread)
    assert alpha == 1.0 and 0.5 * noise < misfit < 1.5 * noise


def test_target_spends_labels_only_on_what_labels_can_remove():
    t = TargetError(force_error=0.05)
    rms = np.sqrt(3)  # the learner's keys are per-atom norms over three components

    def r(reducible, noise, atom=None):
        return {"epistemic_rms_force_std": reducible * rms, "force_noise": noise,
                "epistemic_max_force_std": (atom or reducible) * rms, "max_force_std": 1.0}

    # misfit 0.03 leaves sqrt(0.05^2 - 0.03^2) = 0.04 for the reducible part
    assert t.decide(0, None, r(0.039, 0.03)) is Decision.SKIP
    assert t.decide(1, None, r(0.041, 0.03)) is Decision.LABEL
    # one atom far above the structure's RMS: three times the threshold labels
    assert t.decide(2, None, r(0.01, 0.03, atom=0.11)) is Decision.SKIP
    assert t.decide(3, None, r(0.01, 0.03, atom=0.13)) is Decision.LABEL
    # a misfit above the target: labels only where the reducible part reaches the misfit
    assert t.decide(4, None, r(0.059, 0.06)) is Decision.SKIP
    assert t.decide(5, None, r(0.061, 0.06)) is Decision.LABEL


def _small_run(tmp_path, name, steps, trigger=None, T=700.0):
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg.update(run_dir=str(tmp_path / name), progress=False, validation=None)
    cfg["md"].update(steps=steps, temperature_K=T, trajectory_interval=1)
    if trigger is not None:
        cfg["trigger"] = trigger
    return cfg


def test_the_run_starts_from_the_labelled_structure_and_reports_against_the_target(tmp_path):
    cfg = _small_run(tmp_path, "run", 3)
    summary = run_otf(cfg)
    store = LabelStore(tmp_path / "run" / "labels.h5", mode="r")
    first = store[0]
    store.close()
    traj = read(tmp_path / "run" / "md.traj", ":")
    np.testing.assert_allclose(traj[0].positions, first.positions, atol=1e-12)
    perfect = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    assert np.abs(first.positions - perfect.positions).max() > 0.01  # a rattled copy
    pe = summary["predicted_force_error"]
    target = cfg["trigger"]["force_error"]
    assert pe["target"] == target and pe["steps"] >= 3 and 0.0 <= pe["fraction_above_target"] <= 1
    assert pe["median"] <= pe["p90"] <= pe["max"] and pe["misfit"] >= 0.0
    # the default trigger is the accuracy target, and sigma is calibrated from the start
    assert summary["calibration"] != 1.0


def test_labelling_stops_as_the_model_meets_the_target(tmp_path):
    """At a fixed temperature the target trigger stops labelling; the adaptive one does not."""
    target = run_otf(_small_run(tmp_path, "target", 600, {"kind": "target"}))  # the default
    # the baseline: the adaptive trigger labelling the step that fires, as before the window
    cfg = _small_run(tmp_path, "adaptive", 600, {"kind": "adaptive", "factor": 1.2, "min_gap": 5})
    adaptive = run_otf({**cfg, "lookahead_fs": 0.0})
    late = [s for s in target["label_steps"] if s > 300]
    assert len(late) <= 1, target["label_steps"]
    assert target["reference_calls"] < adaptive["reference_calls"]
    assert target["predicted_force_error"]["fraction_above_target_last_tenth"] == 0.0


def test_bad_target_fails_before_anything_is_written(tmp_path):
    for bad in (0.0, -0.1):
        cfg = _small_run(tmp_path, "bad", 3, {"kind": "target", "force_error": bad})
        with pytest.raises(ConfigError, match="force_error"):
            run_otf(cfg)
        assert not (tmp_path / "bad").exists()
