"""Reference MD frames are sampled in equilibrium at their labelled temperature."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk

from potlearn_ase.data.generate import equilibration_steps, reference_md_frames


def test_equilibration_spans_five_thermostat_times():
    # friction 0.02 / fs: a thermostat time of 50 fs, five of them 250 fs = 125 steps of 2 fs
    assert equilibration_steps(2.0, 0.02 / units.fs) == 125
    assert equilibration_steps(1.0, 0.02 / units.fs) == 250


@pytest.mark.parametrize("temperature", [300.0, 1200.0])
def test_mean_kinetic_temperature_matches_label(temperature):
    # 108 atoms: one frame's kinetic temperature scatters by sqrt(2 / 324) = 8 %; 16 frames
    # 20 fs apart (about 8 independent ones) bring the mean's scatter to about 3 %, so a 10 %
    # bound is over three standard deviations wide and a cold transient (about 0.6 T in the
    # first few hundred fs) fails it.
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    frames = reference_md_frames(temperature, 16, every=10, atoms=cell, rng=7)
    kinetic = np.array([a.info["kinetic_temperature_K"] for a in frames])
    assert all(a.info["temperature_K"] == temperature for a in frames)
    assert abs(kinetic.mean() / temperature - 1.0) < 0.10
