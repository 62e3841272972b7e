"""The plots write valid, nonempty PNG files and reject inconsistent input."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from potlearn_ase.analysis.plots import error_histogram, parity_plot, timeseries_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_parity_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=300)
    out = parity_plot(t, t + 0.1 * rng.normal(size=300), tmp_path / "sub" / "parity.png",
                      title="forces")
    assert out == tmp_path / "sub" / "parity.png"
    w, h = _png_size(out)
    assert w > 100 and h > 100


def test_error_histogram_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.normal(size=500)
    out = error_histogram(t, t + rng.normal(size=500), tmp_path / "hist.png", bins=20,
                          label="energy error (eV/atom)")
    w, h = _png_size(out)
    assert w > 100 and h > 100


def test_timeseries_plot_log_scale_with_zeros(tmp_path):
    x = np.arange(50)
    sigma = np.abs(np.sin(x / 5.0))
    sigma[0] = 0.0  # non-positive values are left out on a log axis, not an error
    out = timeseries_plot(
        x, {"max force sigma": sigma, "threshold": np.full(50, 0.3)}, tmp_path / "ts.png",
        xlabel="step", ylabel="eV/A", logy=True,
    )
    _png_size(out)


def test_inconsistent_lengths_raise(tmp_path):
    with pytest.raises(ValueError, match="series 'b'"):
        timeseries_plot([0, 1, 2], {"a": [1, 2, 3], "b": [1, 2]}, tmp_path / "x.png",
                        xlabel="step", ylabel="y")
    with pytest.raises(ValueError, match="3 values"):
        parity_plot([1, 2, 3], [1, 2], tmp_path / "y.png")
    assert not (tmp_path / "x.png").exists()


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    # drawn on the Agg canvas without pyplot: a user's interactive backend is untouched
    code = (
        "import sys, matplotlib\n"
        "matplotlib.rcParams['backend'] = 'svg'\n"
        "from potlearn_ase.analysis.plots import parity_plot\n"
        f"parity_plot([0.0, 1.0], [0.1, 0.9], {str(tmp_path / 'p.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules, matplotlib.get_backend())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "svg"]
    _png_size(tmp_path / "p.png")
