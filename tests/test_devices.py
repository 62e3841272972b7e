"""Every torch path on every device present, in float64 and float32.

Parametrised over ``["cpu"] + (["cuda"] if torch.cuda.is_available() else [])``: the
descriptor, the linear and neural committees behind the calculator, and both trainers must
give the CPU float64 results on each device (to rounding in float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import potlearn_ase
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.data.batch import resolve_device
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32]
CFG = ACEConfig(cutoff=4.0, n_radial=4, l_max=2)
# float32 agrees with float64 to rounding; the tolerances are relative to the largest value
RTOL = {torch.float64: 1e-10, torch.float32: 2e-4}


def _close(
    a: np.ndarray, b: np.ndarray, dtype: torch.dtype, what: str, scale: float | None = None
) -> None:
    scale = max(float(np.abs(b).max()) if scale is None else scale, 1e-8)
    err = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3e} (scale {scale:.3e})"


@pytest.fixture(scope="module")
def models(cu_train, tmp_path_factory):
    """A linear and a neural committee fitted on the CPU in float64, saved to files."""
    d = tmp_path_factory.mktemp("devices")
    desc = ACEDescriptor(["Cu"], CFG)
    lin = fit_linear(desc, cu_train[:8], LinearFitConfig(n_members=4), rng=0)
    CommitteeCalculator(model=lin).save(d / "linear.pt")
    nn, _ = train_neural(
        desc,
        cu_train[:8],
        None,
        NeuralTrainConfig(n_members=3, hidden=(8,), epochs=3, device="cpu", seed=0),
    )
    CommitteeCalculator(model=nn).save(d / "neural.pt")
    return d


def _results(calc: CommitteeCalculator, atoms) -> dict[str, np.ndarray]:
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    return {k: np.asarray(calc.results[k]) for k in ("energy", "forces", "stress", "forces_std")}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_descriptor_on_device(device, dtype, rattled_cu):
    ref = ACEDescriptor(["Cu"], CFG).compute(rattled_cu)
    desc = ACEDescriptor(["Cu"], CFG, dtype=dtype, device=device)
    out = desc.compute(rattled_cu)
    assert out.features.device.type == device and out.features.dtype == dtype
    _close(out.features.cpu().double().numpy(), ref.features.numpy(), dtype, "features")
    # the shared derivatives: a random cotangent gives the same forces and virial
    G = torch.randn(2, *ref.features.shape, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    dx_ref, de_ref = ref.vjp(G)
    dx, de = out.vjp(G.to(device=device, dtype=dtype))
    _close(dx.cpu().double().numpy(), dx_ref.numpy(), dtype, "vjp positions")
    _close(de.cpu().double().numpy(), de_ref.numpy(), dtype, "vjp strain")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind", ["linear", "neural"])
def test_calculator_agrees_across_devices_and_dtypes(models, kind, device, dtype, cu_test):
    ref_calc = potlearn_ase.load(models / f"{kind}.pt")
    calc = potlearn_ase.load(models / f"{kind}.pt", device=device, dtype=dtype)
    assert next(iter(calc.model.buffers())).device.type == device
    for atoms in cu_test[:2]:
        ref, got = _results(ref_calc, atoms), _results(calc, atoms)
        for key in ref:
            # the spread is a difference of members: its rounding scales with the forces
            scale = float(np.abs(ref["forces"]).max()) if key == "forces_std" else None
            _close(got[key], ref[key], dtype, f"{kind} {key} on {device}/{dtype}", scale)
        # forces are not trivially zero, so agreement means something
        assert np.abs(ref["forces"]).max() > 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_trainers_on_device_match_cpu(device, cu_train):
    frames = cu_train[:6]
    cpu = ACEDescriptor(["Cu"], CFG)
    dev = ACEDescriptor(["Cu"], CFG, device=device)
    lin_cpu = fit_linear(cpu, frames, LinearFitConfig(n_members=2), rng=1)
    lin_dev = fit_linear(dev, frames, LinearFitConfig(n_members=2), rng=1)
    assert lin_dev.coef.device.type == device
    np.testing.assert_allclose(
        lin_dev.normal_equations.AtA, lin_cpu.normal_equations.AtA, rtol=1e-9, atol=1e-9
    )
    _close(lin_dev.predict(frames[0])["forces"], lin_cpu.predict(frames[0])["forces"],
           torch.float64, "linear fit")
    cfg = NeuralTrainConfig(n_members=2, hidden=(8,), epochs=3, seed=2, device="cpu")
    nn_cpu, h_cpu = train_neural(cpu, frames, None, cfg)
    nn_dev, h_dev = train_neural(cpu, frames, None, NeuralTrainConfig(**{**cfg.__dict__,
                                                                       "device": device}))
    assert nn_dev.feature_mean.device.type == device
    assert h_dev.val_loss[-1] < h_dev.val_loss[0]  # it trained
    np.testing.assert_allclose(h_dev.val_loss, h_cpu.val_loss, rtol=1e-8)
    _close(nn_dev.predict(frames[1])["forces"], nn_cpu.predict(frames[1])["forces"],
           torch.float64, "neural training")


def test_auto_device_falls_back_to_cpu(cu_train):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    desc = ACEDescriptor(["Cu"], CFG)
    model, _ = train_neural(
        desc, cu_train[:3], None, NeuralTrainConfig(n_members=1, hidden=(4,), epochs=1,
                                                    device="auto")
    )
    assert model.feature_mean.device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_asking_for_a_missing_cuda_device_is_a_clear_error():
    from potlearn_ase.errors import ConfigError

    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
