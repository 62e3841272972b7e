"""Reading and writing: extxyz and LAMMPS round trips, and errors that point at the fault.

Frame numbers in messages are 0-based (as ``index=``), line numbers 1-based.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from potlearn_ase.data import Dataset, get_labels, read, write
from potlearn_ase.errors import DataFormatError, InvalidStructureError
from tests.data.helpers import cu_cu3au_frames, labelled_molecule

# ASE writes per-atom columns with 8 decimals; per-frame values (energy, stress, info, cell)
# are written with repr and come back exactly.
PER_ATOM_ATOL = 5.1e-9


def _frames():
    frames = cu_cu3au_frames(4)
    frames.append(labelled_molecule())  # non-periodic, no stress
    frames[0].info["tags"] = np.array([1.5, 2.5])
    frames[1].info["converged"] = True
    return frames


def test_extxyz_round_trip_of_labels_info_cell_pbc(tmp_path):
    frames = _frames()
    path = tmp_path / "train.xyz"
    write(path, frames)
    back = read(path)
    assert isinstance(back, Dataset) and len(back) == len(frames)
    assert back.source == str(path)
    for a, b in zip(frames, back, strict=True):
        la, lb = get_labels(a), get_labels(b)
        assert set(la) == set(lb)
        assert lb["energy"] == la["energy"]
        np.testing.assert_allclose(lb["forces"], la["forces"], rtol=0, atol=PER_ATOM_ATOL)
        if "stress" in la:
            np.testing.assert_array_equal(lb["stress"], la["stress"])
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=PER_ATOM_ATOL)
        np.testing.assert_array_equal(b.numbers, a.numbers)
        np.testing.assert_array_equal(b.pbc, a.pbc)
        np.testing.assert_array_equal(b.cell.array, a.cell.array)
        assert set(b.info) == set(a.info)
        for key, value in a.info.items():
            np.testing.assert_array_equal(b.info[key], value)
    assert back[1].info["converged"] is True
    assert back[0].info["origin"] == "md-0"


def test_index_selection_and_compressed_files(tmp_path):
    frames = _frames()
    path = tmp_path / "train.xyz.gz"
    write(path, frames)
    assert len(read(path)) == 5
    sub = read(path, index="1:5:2")
    assert [a.info["origin"] for a in sub] == ["md-1", "md-3"]
    last = read(path, index=-1)
    assert len(last) == 1 and last[0].get_chemical_formula() == "H2O"
    with pytest.raises(IndexError, match="frame 9"):
        read(path, index=9)


def test_dataset_read_write_delegate(tmp_path):
    data = Dataset(_frames())
    path = tmp_path / "d.extxyz"
    data.write(path)
    again = Dataset.read(path, index=":2")
    assert len(again) == 2
    np.testing.assert_array_equal(again.energies, data.energies[:2])


def test_lammps_data_round_trip(tmp_path):
    atoms = cu_cu3au_frames(1)[0]  # Cu3Au, rattled, orthorhombic cell
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.3, 0, 0], [0.2, 0.1, 0]], scale_atoms=False)
    path = tmp_path / "cu3au.data"
    write(path, atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True)
    text = path.read_text()
    assert "2 atom types" in text and "Masses" in text
    back = read(path, format="lammps-data", atom_style="atomic")
    assert len(back) == 1
    b = back[0]
    np.testing.assert_array_equal(b.numbers, atoms.numbers)
    np.testing.assert_allclose(b.cell.array, atoms.cell.array, atol=1e-8)
    np.testing.assert_allclose(b.positions, atoms.positions, atol=1e-8)
    assert b.pbc.all()


def test_lammps_dump_text_is_read_frame_by_frame(tmp_path):
    path = tmp_path / "run.lammpstrj"
    lines = []
    for step, shift in ((0, 0.0), (10, 0.25)):
        lines += [
            "ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", "2",
            "ITEM: BOX BOUNDS pp pp pp", "0 4.0", "0 4.0", "0 4.0",
            "ITEM: ATOMS id type x y z fx fy fz",
            f"1 1 {0.5 + shift} 0.5 0.5 0.1 0.0 0.0",
            f"2 2 2.5 {2.5 + shift} 2.5 -0.1 0.0 0.0",
        ]
    path.write_text("\n".join(lines) + "\n")
    frames = read(path, specorder=["Cu", "Au"])  # .lammpstrj means lammps-dump-text
    assert len(frames) == 2
    assert frames[1].get_chemical_symbols() == ["Cu", "Au"]
    np.testing.assert_allclose(frames[1].positions[0], [0.75, 0.5, 0.5])
    np.testing.assert_allclose(frames[0].cell.array, 4.0 * np.eye(3))
    last = read(path, index=-1, format="lammps-dump-text", specorder=["Cu", "Au"])
    np.testing.assert_allclose(last[0].positions[1], [2.5, 2.75, 2.5])


def _write_with_broken_frame(tmp_path: Path, break_line) -> tuple[Path, list[str], int]:
    """Five frames; ``break_line(lines, start)`` edits frame 3, which starts at ``start``."""
    path = tmp_path / "broken.xyz"
    write(path, _frames()[:4] + cu_cu3au_frames(1, seed=5))
    lines = path.read_text().splitlines()
    starts, i = [], 0
    while i < len(lines):
        starts.append(i)
        i += int(lines[i]) + 2
    break_line(lines, starts[3])
    path.write_text("\n".join(lines) + "\n")
    return path, lines, starts[3]


def _assert_points_at(err: DataFormatError, path: Path, frame: int, line: int) -> None:
    msg = str(err)
    assert str(path) in msg
    assert re.search(rf"\bframe {frame}\b", msg), msg
    assert re.search(rf"\bline {line}\b", msg), msg


def test_non_numeric_coordinate_names_file_frame_and_line(tmp_path):
    def corrupt(lines, start):
        cols = lines[start + 3].split()
        cols[2] = "1.2.3"
        lines[start + 3] = "  ".join(cols)

    path, _, start = _write_with_broken_frame(tmp_path, corrupt)
    with pytest.raises(DataFormatError) as info:
        read(path)
    _assert_points_at(info.value, path, 3, start + 4)
    assert "'1.2.3'" in str(info.value)
    assert len(read(path, index=":3")) == 3  # the frames before it are still readable


def test_atom_count_too_large_blames_that_frame(tmp_path):
    def grow(lines, start):
        lines[start] = str(int(lines[start]) + 1)

    path, _, start = _write_with_broken_frame(tmp_path, grow)
    with pytest.raises(DataFormatError, match="may be too large") as info:
        read(path)
    n = int(path.read_text().splitlines()[start])
    # the first line read as an atom that is not one: the next frame's atom count
    _assert_points_at(info.value, path, 3, start + 1 + n + 1)


def test_atom_count_too_small_blames_that_frame(tmp_path):
    def shrink(lines, start):
        lines[start] = str(int(lines[start]) - 1)

    path, _, start = _write_with_broken_frame(tmp_path, shrink)
    with pytest.raises(DataFormatError, match="count is too small") as info:
        read(path)
    n = int(path.read_text().splitlines()[start])
    _assert_points_at(info.value, path, 3, start + 2 + n + 1)


def test_garbled_atom_count_and_truncated_file(tmp_path):
    def garble(lines, start):
        lines[start] = "four"

    path, _, start = _write_with_broken_frame(tmp_path, garble)
    with pytest.raises(DataFormatError, match="expected the atom count of frame 3") as info:
        read(path)
    _assert_points_at(info.value, path, 3, start + 1)

    path = tmp_path / "cut.xyz"
    write(path, _frames()[:4])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataFormatError, match="ends after 2 of the 4 atom lines") as info:
        read(path)
    _assert_points_at(info.value, path, 3, len(lines) - 2)


def test_blank_line_inside_file_is_an_error_not_silent_truncation(tmp_path):
    path = tmp_path / "gap.xyz"
    write(path, _frames()[:3])
    lines = path.read_text().splitlines()
    n0 = int(lines[0])
    lines.insert(n0 + 2, "")
    path.write_text("\n".join(lines) + "\n\n\n")
    with pytest.raises(DataFormatError, match="blank line") as info:
        read(path)
    _assert_points_at(info.value, path, 1, n0 + 3)


def test_missing_file_and_invalid_structure(tmp_path):
    missing = tmp_path / "nowhere.xyz"
    with pytest.raises(FileNotFoundError, match="nowhere.xyz"):
        read(missing)
    atoms = bulk("Cu", cubic=True)
    atoms.cell[2] = atoms.cell[0]  # periodic and singular
    path = tmp_path / "singular.xyz"
    write(path, [bulk("Cu", cubic=True), atoms])
    with pytest.raises(InvalidStructureError, match=r"singular\.xyz, frame 1: singular cell"):
        read(path)


def test_unknown_format_and_multi_frame_single_format(tmp_path):
    with pytest.raises(DataFormatError, match="cannot tell the file format"):
        write(tmp_path / "x.unknownext", _frames())
    with pytest.raises(DataFormatError, match="exactly one structure, 2 given"):
        write(tmp_path / "x.data", _frames()[:2], format="lammps-data")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
