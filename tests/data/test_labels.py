"""Labels under other keys, virials, and labels checked as a file is read."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from potlearn_ase.data import get_labels, read, write
from potlearn_ase.data.labels import LabelKeys
from potlearn_ase.data.validate import require_labels
from potlearn_ase.errors import DataFormatError, MissingLabelError


def _labelled(seed: int = 0):
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a.rattle(0.05, seed=seed)
    a.calc = EMT()
    a.get_stress()
    return a


def _plain(a, **info):
    """``a`` without a calculator, its labels moved to other keys."""
    b = a.copy()
    b.calc = None
    b.info.update(info)
    return b


def test_labels_under_other_keys_and_a_virial(tmp_path):
    ref = _labelled()
    lab = get_labels(ref)
    V = ref.get_volume()
    s = lab["stress"]
    virial = -V * np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
    frame = _plain(ref, REF_energy=lab["energy"], virial=virial.ravel())
    frame.arrays["REF_forces"] = lab["forces"]
    write(tmp_path / "ref.xyz", [frame])
    # by default the virial becomes a stress; the other keys are unknown
    plain = read(tmp_path / "ref.xyz")[0]
    np.testing.assert_allclose(get_labels(plain)["stress"], s, rtol=1e-12, atol=1e-14)
    with pytest.raises(MissingLabelError, match="REF_energy, REF_forces: name the label keys"):
        require_labels(plain, where="ref.xyz, frame 0")
    got = read(tmp_path / "ref.xyz", labels=LabelKeys(energy="REF_energy", forces="REF_forces"))
    labels = get_labels(got[0])
    assert labels["energy"] == pytest.approx(lab["energy"], rel=1e-14)
    np.testing.assert_allclose(labels["forces"], lab["forces"], atol=5.1e-9)
    np.testing.assert_allclose(labels["stress"], s, rtol=1e-12, atol=1e-14)
    assert "REF_energy" not in got[0].info and "REF_forces" not in got[0].arrays


def test_bad_labels_are_named_when_the_file_is_read(tmp_path):
    frames = [_labelled(k) for k in range(3)]
    write(tmp_path / "ok.xyz", frames)
    text = (tmp_path / "ok.xyz").read_text().splitlines()
    header = [i for i, line in enumerate(text) if "Lattice=" in line]
    bad = tmp_path / "bad.xyz"
    # NaN forces on atom 3 of frame 1
    lines = list(text)
    row = lines[header[1] + 1 + 3].split()
    row[-1] = "nan"
    lines[header[1] + 1 + 3] = " ".join(row)
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(MissingLabelError, match=r"frame 1: forces are not finite .*atom 3"):
        read(bad)
    # an energy that is not a number
    lines = list(text)
    lines[header[0]] = re.sub(r"energy=\S+", "energy=abc", lines[header[0]])
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.xyz, frame 0: energy is not a number"):
        read(bad)
    # a NaN stress (it would make every fitted coefficient NaN)
    from ase.calculators.singlepoint import SinglePointCalculator

    nan = frames[2].copy()
    lab = get_labels(frames[2])
    lab["stress"][4] = np.nan
    nan.calc = SinglePointCalculator(nan, **lab)
    write(bad, frames[:2] + [nan])
    with pytest.raises(MissingLabelError, match=r"frame 2: stress are not finite .*component 4"):
        read(bad)
    assert len(read(tmp_path / "ok.xyz")) == 3  # the good file is untouched


@pytest.mark.parametrize(
    ("keys", "missing"),
    [
        (LabelKeys(energy="REF_enrgy", forces="REF_forces"), "REF_enrgy"),
        (LabelKeys(energy="REF_energy", forces="REF_forcse"), "REF_forcse"),
        (LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_strss"), "REF_strss"),
    ],
)
def test_a_misspelled_label_key_is_an_error_not_the_files_own_label(tmp_path, keys, missing):
    # the file carries its own energy/forces/stress AND reference labels under REF_* keys
    ref = _labelled()
    lab = get_labels(ref)
    frame = ref.copy()
    frame.calc = _labelled(seed=1).calc  # other labels under ASE's names
    frame.info["REF_energy"] = lab["energy"]
    frame.info["REF_stress"] = lab["stress"]
    frame.arrays["REF_forces"] = lab["forces"]
    write(tmp_path / "both.xyz", [frame])
    good = read(
        tmp_path / "both.xyz",
        labels=LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress"),
    )[0]
    assert get_labels(good)["energy"] == pytest.approx(lab["energy"], rel=1e-14)
    assert good.calc.results["free_energy"] == pytest.approx(lab["energy"], rel=1e-14)
    with pytest.raises(MissingLabelError) as err:
        read(tmp_path / "both.xyz", labels=keys)
    msg = str(err.value)
    assert "both.xyz, frame 0" in msg and repr(missing) in msg
    # the keys the frame does carry are listed, so the typo is easy to see
    assert "REF_energy" in msg and "REF_forces" in msg
