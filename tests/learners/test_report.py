"""Run plots: the quantity drawn against the threshold is the one the trigger compares."""

from __future__ import annotations

import numpy as np

from potlearn_ase.learners.report import _measure, write_plots
from potlearn_ase.learners.triggers import trigger_from_config

HISTORY = [
    {"max_force_std": 0.01 * i, "energy_std": 0.02 * i, "threshold": 0.004,
     "max_extrapolation_grade": 1.0 + 0.1 * i}
    for i in range(8)
]


def test_plotted_measure_follows_the_trigger_kind(tmp_path):
    energy = trigger_from_config({"kind": "energy", "energy_std_per_atom": 0.004, "min_gap": 3})
    name, values, unit, same = _measure(HISTORY, energy.describe(), n_atoms=4)
    assert unit == "eV/atom" and same
    np.testing.assert_allclose(values, [0.005 * i for i in range(8)])  # per atom, not per cell
    grade = trigger_from_config({"kind": "extrapolation", "max_grade": 2.0})
    assert _measure(HISTORY, grade.describe(), 4)[2] == "grade"
    ratio = trigger_from_config({"kind": "relative", "ratio": 0.1})
    assert _measure(HISTORY, ratio.describe(), 4)[3] is False  # no threshold line in eV/A
    fixed = trigger_from_config({"kind": "fixed", "max_force_std": 0.05, "reject_above": 1.0})
    assert _measure(HISTORY, fixed.describe(), 4)[:3:2] == ("max force sigma", "eV/A")
    paths = write_plots(tmp_path, HISTORY, [2, 5], {}, trigger=energy.describe(), n_atoms=4)
    assert all((tmp_path / p).stat().st_size > 1000 for p in paths)


def test_labels_and_temperature_have_their_own_axes_and_label_steps_are_marked(tmp_path):
    from potlearn_ase.learners.report import labels_figure, sigma_figure

    hist = [{**h, "temperature": 300.0 + 100 * i} for i, h in enumerate(HISTORY)]
    fig = labels_figure(hist, [2, 5])
    counts_ax, temp_ax = fig.axes
    assert "count" in counts_ax.get_ylabel() and "(K)" in temp_ax.get_ylabel()
    np.testing.assert_allclose(counts_ax.get_lines()[0].get_ydata(), [0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(temp_ax.get_lines()[0].get_ydata(), [300.0 + 100 * i
                                                                     for i in range(8)])
    assert temp_ax.get_ylim()[1] >= 1000.0 and counts_ax.get_ylim()[1] < 10  # not squashed
    # without temperatures there is one axis
    assert len(labels_figure(HISTORY, [2, 5]).axes) == 1

    fixed = trigger_from_config({"kind": "fixed", "max_force_std": 0.05})
    ax = sigma_figure(HISTORY, [2, 5], trigger=fixed.describe()).axes[0]
    marks = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    assert len(marks) == 1
    np.testing.assert_allclose(marks[0][:, 0], [2, 5])  # at the label steps
    np.testing.assert_allclose(marks[0][:, 1], [0.02, 0.05])  # on the plotted sigma
    paths = write_plots(tmp_path, hist, [2, 5], {}, trigger=fixed.describe())
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["sigma_threshold.png", "labels.png"]
