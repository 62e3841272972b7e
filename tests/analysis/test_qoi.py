"""QoIs with committee uncertainty: linear ACE of EMT Cu against EMT, computed the same way."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from potlearn_ase.analysis.cli import add_qoi_subparser, structure_from_spec
from potlearn_ase.analysis.qoi import (
    compute_qois,
    elastic_constants,
    equation_of_state,
    phonon_band_plot,
    phonons,
    posterior_committee,
    rdf,
    vacancy_formation_energy,
)
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.data.generate import label
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models import LinearCommittee, LinearFitConfig, fit_calibration, fit_linear

PRIM = bulk("Cu", "fcc", a=3.61)


@pytest.fixture(scope="module")
def cu_model(cu_train, cu_test):
    """Linear ACE fitted to EMT MD frames plus strained and rattled cells; calibrated."""
    rng = np.random.default_rng(0)
    extra = []
    for s in np.linspace(-0.04, 0.04, 5):
        for _ in range(2):
            a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
            eps = rng.normal(0.0, 0.01, (3, 3))
            eps = 0.5 * (eps + eps.T) + s * np.eye(3)
            a.set_cell(a.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            a.rattle(0.03, seed=int(rng.integers(1_000_000)))
            extra.append(label(a, EMT()))
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    model = fit_linear(desc, list(cu_train) + extra, LinearFitConfig(n_members=8), rng=0)
    return model, fit_calibration(model, cu_test)


@pytest.fixture(scope="module")
def reports(cu_model):
    model, alpha = cu_model
    which = ("eos", "elastic", "phonons")
    ours = compute_qois(model, PRIM, which=which, calibration=alpha)
    emt = compute_qois(EMT(), PRIM, which=which)
    return ours, emt


def test_calibration_scales_every_sigma_once(cu_model, reports):
    model, alpha = cu_model
    assert alpha > 1.5
    raw = compute_qois(model, PRIM, which=("eos", "elastic", "phonons"))
    ours = reports[0]
    assert set(raw.qois) == set(ours.qois)
    for name, q in raw.qois.items():
        assert ours.qois[name].mean == pytest.approx(q.mean, rel=1e-9, abs=1e-12), name
        assert ours.qois[name].std == pytest.approx(alpha * q.std, rel=1e-6, abs=1e-12), name
    np.testing.assert_allclose(ours.phonons.bands.std(0), alpha * raw.phonons.bands.std(0),
                               rtol=1e-6, atol=1e-12)


def test_cu_model_matches_emt_with_honest_sigma(reports):
    ours, emt = reports
    q, r = ours.qois, emt.qois
    # X point of fcc: two degenerate transverse branches and the longitudinal one
    for band in (1, 3):
        name = f"phonon_X_{band}"
        assert r[name].std == 0.0
        err = abs(q[name].mean - r[name].mean)
        assert err < 0.05 * r[name].mean, name
        assert q[name].std > 0 and err < 3 * q[name].std, (name, err, q[name].std)
    assert 7.0 < r["phonon_X_3"].mean < 9.5  # EMT Cu, longitudinal X mode in THz
    assert abs(q["lattice_constant"].mean - r["lattice_constant"].mean) < 0.01
    assert abs(q["bulk_modulus"].mean - r["bulk_modulus"].mean) < 0.05 * r["bulk_modulus"].mean
    for name in ("C11", "C12", "C44"):
        assert abs(q[name].mean - r[name].mean) < 0.1 * r[name].mean, name
    # the QoIs were computed at the mean model's equilibrium, not at the input 3.61 A
    assert ours.structure.cell.get_bravais_lattice().a == pytest.approx(
        q["lattice_constant"].mean, abs=2e-3
    )


def test_elastic_constants_agree_with_equation_of_state():
    """B = (C11 + 2 C12) / 3 for a cubic crystal: two independent routes through EMT."""
    a0 = equation_of_state(EMT(), PRIM)["lattice_constant"].mean
    cell = bulk("Cu", "fcc", a=a0, cubic=True)
    C, full = elastic_constants(EMT(), cell)
    B = equation_of_state(EMT(), cell)["bulk_modulus"].mean
    assert (C["C11"].mean + 2 * C["C12"].mean) / 3 == pytest.approx(B, rel=0.02)
    assert full.shape == (1, 6, 6)
    assert abs(full[0, 0, 3]) < 1e-3 * C["C11"].mean  # cubic: no normal-shear coupling
    assert C["C11"].mean > C["C12"].mean > 0 and C["C44"].mean > 0


def _rotated(atoms, angles=(20.0, 35.0, 10.0)):
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ R.T, scale_atoms=True)
    return out


def test_lattice_and_elastic_constants_do_not_depend_on_the_cell_chosen(cu_model):
    model, _ = cu_model
    cells = {
        "primitive": PRIM,
        "cubic": bulk("Cu", "fcc", a=3.61, cubic=True),
        "orthorhombic": bulk("Cu", "fcc", a=3.61, orthorhombic=True),  # x along [110]
        "supercell": PRIM.repeat(2),
        "rotated": _rotated(bulk("Cu", "fcc", a=3.61, cubic=True)),
    }
    for source in (EMT(), model):
        got = {k: compute_qois(source, c, which=("eos", "elastic")).qois for k, c in cells.items()}
        ref = got["primitive"]
        assert 3.5 < ref["lattice_constant"].mean < 3.7
        for name, q in got.items():
            for key in ("lattice_constant", "bulk_modulus", "C11", "C12", "C44"):
                assert q[key].mean == pytest.approx(ref[key].mean, rel=2e-3), (name, key)
                assert q[key].std == pytest.approx(ref[key].std, rel=0.05, abs=1e-9), (name, key)


def test_vacancy_of_a_compound_is_refused():
    from potlearn_ase.errors import InvalidStructureError

    nacl = bulk("NaCl", "rocksalt", a=5.64)
    with pytest.raises(InvalidStructureError, match="ClNa needs chemical potentials"):
        vacancy_formation_energy(EMT(), nacl)


def test_explicit_calibration_overrides_the_calculator(cu_model):
    model, alpha = cu_model
    calc = CommitteeCalculator(model=model, calibration=alpha)
    raw = compute_qois(model, PRIM, which=("eos",)).qois["bulk_modulus"].std
    own = compute_qois(calc, PRIM, which=("eos",)).qois["bulk_modulus"].std
    one = compute_qois(calc, PRIM, which=("eos",), calibration=1.0).qois["bulk_modulus"].std
    assert own == pytest.approx(alpha * raw) and one == pytest.approx(raw)


def test_each_member_is_its_own_potential(cu_model):
    """The shared pass gives member m exactly what a one-member committee of m gives."""
    model, _ = cu_model
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    all_members, _ = elastic_constants(model, cell)
    one = LinearCommittee(model.descriptor, model.coef[3:4].numpy(), config=model.config)
    alone, _ = elastic_constants(one, cell)
    assert alone["C44"].samples[0] == pytest.approx(all_members["C44"].samples[3], rel=1e-9)
    # the committee of posterior draws averages to the posterior mean for linear QoIs
    mean = LinearCommittee(model.descriptor, model.mean_coef()[None], config=model.config)
    assert elastic_constants(mean, cell)[0]["C11"].mean == pytest.approx(
        all_members["C11"].mean, rel=1e-9
    )


def test_posterior_committee_draws_more_samples(cu_model):
    model, _ = cu_model
    big = posterior_committee(model, 24, rng=5)
    assert big.n_members == 24
    np.testing.assert_allclose(big.coef.mean(0).numpy(), model.mean_coef(), atol=1e-10)
    ph = phonons(big, PRIM, supercell=3, bands=False, dos=False)
    assert ph.special_frequencies.shape[:2] == (24, len(ph.labels))
    assert ph.special_frequencies.std(0).max() > 0
    kept = getattr(model, "active_set", None)
    model.active_set = "the training active set"
    try:
        assert posterior_committee(model, 2).active_set == "the training active set"
    finally:
        model.active_set = kept
    from potlearn_ase.models.neural import NeuralCommittee

    with pytest.raises(ValueError, match="posterior"):
        posterior_committee(NeuralCommittee(model.descriptor, n_members=2), 4)


def test_phonon_bands_plot_and_dos(cu_model, tmp_path):
    model, alpha = cu_model
    ph = phonons(model, PRIM, supercell=3, npoints=30, mesh=(8, 8, 8))
    ref = phonons(EMT(), PRIM, supercell=3, npoints=30, mesh=(8, 8, 8))
    assert ph.bands.shape == (8, 30, 3) and ph.dos.shape[0] == 8
    # the DOS integrates to 3 modes per atom
    f = ref.dos_frequencies  # each result has its own grid, spanning its own frequencies
    assert np.trapezoid(ref.dos[0], f) == pytest.approx(3.0, rel=0.03)
    assert np.trapezoid(ph.dos[0], ph.dos_frequencies) == pytest.approx(3.0, rel=0.03)
    # acoustic branches vanish at Gamma
    g = ph.labels.index("G")
    assert np.abs(ph.special_frequencies[:, g, :3]).max() < 1e-3
    out = phonon_band_plot(ph, tmp_path / "bands.png", reference=ref)
    assert out.stat().st_size > 10_000


def test_vacancy_formation_energy_relaxes_down():
    unrelaxed = vacancy_formation_energy(EMT(), PRIM, relax=False)
    relaxed = vacancy_formation_energy(EMT(), PRIM, relax=True)
    assert 0.5 < relaxed.mean < unrelaxed.mean < 2.0


def test_rdf_of_short_md_and_reweighting(cu_model):
    ref = rdf(EMT(), PRIM, temperature_K=300, steps=120, equilibration=40, every=4, rng=1)
    assert ref.ess[0] == pytest.approx(ref.n_frames)
    peak = ref.qois()[0].mean
    assert peak == pytest.approx(3.61 / np.sqrt(2), abs=0.06)
    # twelve nearest neighbours under the first peak: 4 pi rho int r^2 g dr
    rho = 4 / 3.61**3
    first = ref.r < 3.61 * (1 / np.sqrt(2) + 1) / 2
    dr = ref.r[1] - ref.r[0]
    n1 = 4 * np.pi * rho * np.sum(ref.r[first] ** 2 * ref.g[0, first]) * dr
    assert n1 == pytest.approx(12.0, abs=0.5)
    model, _ = cu_model
    ours = rdf(model, PRIM, temperature_K=300, steps=120, equilibration=40, every=4, rng=1)
    assert ours.g.shape[0] == 8
    assert np.all(ours.ess <= ours.n_frames + 1e-9) and np.all(ours.ess > 1)
    assert ours.qois()[0].mean == pytest.approx(peak, abs=0.03)


def test_structure_spec():
    a = structure_from_spec("bulk:Cu:fcc:3.7:cubic")
    assert len(a) == 4 and a.cell[0, 0] == pytest.approx(3.7)
    with pytest.raises(ConfigError, match="not a number"):
        structure_from_spec("bulk:Cu:fcc:big")
    with pytest.raises(FileNotFoundError, match="nowhere.xyz"):
        structure_from_spec("nowhere.xyz")


def test_qoi_cli(cu_model, tmp_path, capsys):
    model, alpha = cu_model
    path = tmp_path / "model.pt"
    CommitteeCalculator(model=model, calibration=alpha).save(path)
    parser = argparse.ArgumentParser()
    add_qoi_subparser(parser.add_subparsers())
    args = parser.parse_args([
        "qoi", str(path), "--structure", "bulk:Cu:fcc:3.61", "--qoi", "eos,elastic",
        "--reference", "emt", "--json", str(tmp_path / "q.json"),
    ])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "bulk_modulus" in text and "C44" in text and "reference" in text
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["qois"]["C11"]["std"] > 0 and data["reference"]["qois"]["C11"]["std"] == 0
    assert data["qois"]["lattice_constant"]["mean"] == pytest.approx(
        data["reference"]["qois"]["lattice_constant"]["mean"], abs=0.01
    )


def test_report_flags_extrapolated_structures(cu_train):
    from potlearn_ase.models import attach_active_set

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    model = attach_active_set(fit_linear(desc, cu_train, LinearFitConfig(n_members=4)), cu_train)
    cell = bulk("Cu", "fcc", a=3.63)  # near the thermal MD's lattice constant
    rep = compute_qois(model, cell, which=("vacancy",), relax_lattice=False,
                       vacancy_options={"relax": False})
    # bulk MD never shows a vacancy: its neighbours lie far outside the training span
    assert rep.extrapolation["vacancy"] > 2.0 > rep.extrapolation["bulk"]
    assert "max extrapolation grade" in rep.table()
    assert rep.to_dict()["extrapolation_grade"]["vacancy"] == rep.extrapolation["vacancy"]
    plain = compute_qois(EMT(), cell, which=("vacancy",), relax_lattice=False,
                         vacancy_options={"relax": False})
    assert plain.extrapolation == {} and "extrapolation" not in plain.table()
