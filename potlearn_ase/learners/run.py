"""An on-the-fly learning run from a configuration: what ``potlearn otf`` executes.

A run directory holds everything needed to continue after a kill::

    config.yaml     the configuration, as given
    labels.h5       every reference label (durable on return of each call)
    model.pt        the latest committee (rebuilt from labels.h5 on resume)
    state.json      learner and MD state: step, positions, momenta, thermostat RNG, trigger
    history.jsonl   what the learner saw and decided at each step (appended at checkpoints)
    md.traj         the accepted MD frames
    validation.xyz  independent reference frames for the final evaluation (made once)
    summary.json    the final report; *.png its plots

The configuration is in :mod:`~potlearn_ase.learners.run_settings`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms, units

from potlearn_ase._moved import RENAMED_CONFIGS, moved_attribute
from potlearn_ase.calculators.committee import CommitteeCalculator
from potlearn_ase.config import to_mapping
from potlearn_ase.data.batch import set_cpu_threads
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors.ace import ACEDescriptor
from potlearn_ase.errors import ConfigError, ReferenceFailure
from potlearn_ase.learners.otf import OTFConfig, checkpoint_atoms
from potlearn_ase.learners.otf_async import learner_class
from potlearn_ase.learners.otf_update import fits_error_model, initial_error_model
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.report import predicted_error_report
from potlearn_ase.learners.run_dir import (
    check_new_run_dir,
    clean_stale_temporaries,
    restore_learner,
)
from potlearn_ase.learners.run_settings import (
    InitialConfig,
    MDConfig,
    ModelConfig,
    OTFRunConfig,
    StructureConfig,
    ValidationConfig,
)
from potlearn_ase.learners.triggers import trigger_from_config
from potlearn_ase.models.active_set import attach_active_set
from potlearn_ase.models.linear import fit_linear

__all__ = [
    "InitialConfig",
    "MDConfig",
    "ModelConfig",
    "OTFRunConfig",
    "StructureConfig",
    "ValidationConfig",
    "build_structure",
    "fit_run_model",
    "run_otf",
]

log = logging.getLogger(__name__)


def build_structure(spec: StructureConfig) -> Atoms:
    """The starting structure of a run."""
    if spec.file is not None:
        from potlearn_ase.data.io import read

        try:
            frames = read(spec.file, index=f"{spec.index}")
        except IndexError:
            raise ConfigError(
                f"structure.index: {spec.file} has no frame {spec.index}"
            ) from None
        atoms = frames[0].copy()
    elif spec.bulk is not None:
        from ase.build import bulk

        kwargs: dict[str, Any] = {"cubic": spec.cubic}
        if spec.crystalstructure:
            kwargs["crystalstructure"] = spec.crystalstructure
        if spec.a is not None:
            kwargs["a"] = spec.a
        try:
            atoms = bulk(spec.bulk, **kwargs)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"structure: ase.build.bulk({spec.bulk!r}) failed: {exc}") from None
    else:
        raise ConfigError("structure: give either 'file' or 'bulk'")
    atoms = atoms.repeat(spec.repeat)
    atoms.calc = None
    return atoms


def _temperature(md: MDConfig, step: int) -> float:
    T = md.temperature_K
    if isinstance(T, (int, float)):
        return float(T)
    t0, t1 = T
    x = min(max(step / max(md.steps, 1), 0.0), 1.0)
    return float(t0 + (t1 - t0) * x)


def _make_dynamics(atoms: Atoms, md: MDConfig, rng: np.random.Generator):
    dt = md.timestep_fs * units.fs
    T0 = _temperature(md, 0)
    if md.ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(atoms, dt, temperature_K=T0, friction=md.friction, rng=rng, fixcm=False)
    if md.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(
        atoms,
        dt,
        temperature_K=T0,
        pressure_au=md.pressure_bar * units.bar,
        compressibility_au=4.57e-5 / units.bar,
    )


def fit_run_model(cfg: OTFRunConfig, frames: list[Atoms], elements: list[str], seed: int):
    """The committee that ``cfg.model`` describes, fitted to ``frames`` (the run's labels)."""
    m = cfg.model
    desc = ACEDescriptor(elements, m.descriptor)
    if m.kind == "linear":
        model = fit_linear(desc, frames, m.fit, rng=seed)
    else:
        from dataclasses import replace

        from potlearn_ase.training.trainer import train_neural

        model, _ = train_neural(desc, frames, None, replace(m.neural, seed=seed))
    # the extrapolation grade rides along with the committee spread (updated with each label)
    return attach_active_set(model, frames)


def _validation_frames(
    cfg: OTFRunConfig, start: Atoms, reference: Reference, run_dir: Path
) -> list[Atoms]:
    """Independent reference MD frames, made once and kept in the run directory."""
    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.data.io import read, write

    path = run_dir / "validation.xyz"
    if path.exists():
        return list(read(path))
    v = cfg.validation
    assert v is not None
    frames: list[Atoms] = []
    calc = reference.make_calculator()
    for k, T in enumerate(v.temperatures_K):
        new = reference_md_frames(
            T,
            v.frames,
            every=v.every,
            atoms=start,
            calc=calc,
            rng=v.seed + k,
            timestep_fs=cfg.md.timestep_fs,
        )
        for a in new:
            a.info["temperature_K"] = float(T)
        frames += new
    write(path, frames)
    return frames


def run_otf(
    config: OTFRunConfig | dict[str, Any] | str | Path,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    reference: Reference | None = None,
) -> dict[str, Any]:
    """Run (or continue) on-the-fly learning; returns the summary also written to JSON.

    Parameters
    ----------
    config : OTFRunConfig, mapping or path
        The configuration; with ``resume`` it is read from the run directory.
    resume : bool
        Continue the run in ``run_dir`` from its last checkpoint; stored labels are reused and
        no reference call is repeated for a stored structure.
    run_dir : path, optional
        Overrides ``config.run_dir``.
    reference : Reference, optional
        Labels with this instead of the one ``config.reference`` names (e.g. a
        :class:`Reference` with its own calculator factory); give the same one on resume.

    Notes
    -----
    Sets torch's CPU thread count once for the run from the size of the starting structure
    (:func:`~potlearn_ase.data.batch.set_cpu_threads`).
    """
    t_start = time.perf_counter()
    if resume:
        rd = Path(run_dir if run_dir is not None else config)  # type: ignore[arg-type]
        if not (rd / "config.yaml").exists():
            raise FileNotFoundError(f"no run to resume in {rd} (config.yaml missing)")
        cfg = OTFRunConfig.from_file(rd / "config.yaml")
    else:
        if isinstance(config, OTFRunConfig):
            cfg = config
        elif isinstance(config, dict):
            cfg = OTFRunConfig.from_dict(config)
        else:
            cfg = OTFRunConfig.from_file(config)
        rd = Path(run_dir if run_dir is not None else cfg.run_dir)
        check_new_run_dir(rd)  # a new run never reuses another run's labels
    # everything the configuration names is checked before the run directory is made
    if reference is None:
        reference = Reference.from_spec(cfg.reference)
    trigger = trigger_from_config(cfg.trigger)
    start = build_structure(cfg.structure)
    set_cpu_threads(len(start))
    reference.check(start)  # e.g. a pseudopotential for every element, before any file
    if not resume:
        rd.mkdir(parents=True, exist_ok=True)
        tmp = rd / "config.yaml.tmp"  # atomic: a kill never leaves half a configuration
        tmp.write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
        os.replace(tmp, rd / "config.yaml")
    else:
        clean_stale_temporaries(rd)
    elements = sorted(set(start.get_chemical_symbols()))
    store = LabelStore(rd / "labels.h5", mode="a")
    try:
        store.check_reference(reference.name, reference.params)
        return _run(cfg, rd, reference, trigger, start, elements, store, resume, t_start)
    finally:
        store.close()


def label_initial(
    start: Atoms,
    reference: Reference,
    store: LabelStore,
    initial: InitialConfig,
    rng: np.random.Generator,
    *,
    skip: int = 0,
) -> None:
    """The starting data of a run: ``initial.n_labels`` rattled copies of ``start``, labelled.

    The first ``skip`` of them are not labelled (they are stored already: a run killed while
    labelling its starting data labels the rest on resume).

    Raises
    ------
    ReferenceFailure
        The reference failed on a starting structure (nothing else to learn from).
    """
    for k in range(initial.n_labels):
        a = start.copy()
        if initial.rattle > 0:
            a.rattle(initial.rattle, seed=int(rng.integers(2**31)))
        if k < skip:
            continue
        res = reference.label(a)
        if not res.ok or res.atoms is None:
            raise ReferenceFailure(f"the reference failed on the starting structure: {res.error}")
        store.append(
            res.atoms,
            provenance={
                "reference": reference.name,
                "reference_params": reference.params,
                "engine": "initial",
                "md_step": 0,
                "uncertainty": {},
                "wall_time": res.wall_time,
                "timestamp": time.time(),
            },
        )


def _run(cfg, rd, reference, trigger, start, elements, store, resume, t_start) -> dict[str, Any]:
    md = cfg.md
    rng = np.random.default_rng(md.seed)
    n_initial = sum(a.info["provenance"].get("engine") == "initial" for a in store)
    if n_initial < cfg.initial.n_labels:
        label_initial(start, reference, store, cfg.initial, rng, skip=n_initial)
    frames = store.frames()
    model = fit_run_model(cfg, frames, elements, md.seed)
    calc = CommitteeCalculator(model=model, calibration=1.0)
    learner = learner_class(reference)(  # reference.workers > 0: the MD does not wait
        calc,
        reference,
        store,
        trigger,
        run_dir=rd,
        settings=OTFConfig(
            seed=md.seed, lookahead=max(1, round(cfg.lookahead_fs / md.timestep_fs))
        ),
        engine="ase",
    )
    atoms = start.copy()
    first = next((a for a in frames if a.info["provenance"].get("engine") == "initial"), None)
    if first is not None and len(first) == len(atoms):
        atoms.set_positions(first.positions)  # the MD starts from the labelled structure
    state = restore_learner(learner, md.trajectory_interval) if resume else None
    if state is None or not fits_error_model(learner.state.ratios, learner.state.spreads):
        # cross-validated on the starting labels, until the labels' own errors take over
        alpha, alpha_epistemic, misfit = initial_error_model(model, frames)
        calc.calibration = alpha
        learner.initial_error_model = (alpha_epistemic, misfit)
    if state is not None:
        calc.calibration = float(state.get("calibration", 1.0))
        atoms = checkpoint_atoms(state)
        if "md_rng" in state:
            rng.bit_generator.state = state["md_rng"]
    else:
        from potlearn_ase.data.generate import thermalize

        thermalize(atoms, _temperature(md, 0), rng)
    learner.refresh_uncertainty()  # with the calibration and the labels' errors of the run
    dyn = _make_dynamics(atoms, md, rng)
    dyn.nsteps = learner.state.md_step
    learner.checkpoint_extra = lambda: {"md_rng": rng.bit_generator.state}
    learner.attach(dyn, trajectory=rd / "md.traj", interval=md.trajectory_interval)

    def thermostat() -> None:
        if hasattr(dyn, "set_temperature"):
            dyn.set_temperature(temperature_K=_temperature(md, dyn.nsteps))

    dyn.attach(thermostat, interval=1)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=md.steps, initial=learner.state.md_step, desc="otf", unit="step")

        def progress() -> None:
            h = learner.history[-1] if learner.history else {}
            bar.n = dyn.nsteps
            extra = {}
            if h.get("max_extrapolation_grade") is not None:
                extra["gamma"] = f"{h['max_extrapolation_grade']:.2f}"
            bar.set_postfix(
                T=f"{atoms.get_temperature():.0f}K",
                sigmaF=f"{h.get('max_force_std', 0):.3f}",
                **extra,
                thr=f"{h.get('threshold', 0):.3f}",
                labels=len(store),
                calls=learner.n_reference_calls,
                refresh=False,
            )
            bar.update(0)

        dyn.attach(progress, interval=10)
    remaining = md.steps - learner.state.md_step
    if remaining > 0:
        dyn.run(remaining)
    learner.flush()  # a batch window's last candidates
    if bar is not None:
        bar.n = md.steps
        bar.close()
    learner.checkpoint(atoms, extra={"finished": True})
    md_seconds = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "steps": md.steps,
        "labels": len(store),
        "reference_failures": store.n_failures,
        "rejected_steps": learner.state.n_rejects,
        "calibration": calc.calibration,
        "wall_time_s": md_seconds,
        "reference_time_s": learner.state.reference_seconds,
        "label_steps": learner.state.label_steps,
    }
    summary["predicted_force_error"] = predicted_error_report(
        learner.history, learner.trigger.describe(), learner.force_noise
    )
    summary["reference_calls"] = _count_reference_calls(store)
    summary["initial_reference_calls"] = cfg.initial.n_labels
    if cfg.validation is not None and cfg.validation.frames > 0 and cfg.validation.temperatures_K:
        summary.update(_evaluate(cfg, rd, learner, reference, start))
    from potlearn_ase.learners.report import write_plots

    summary["plots"] = write_plots(
        rd, learner.history, learner.state.label_steps, summary,
        trigger=learner.trigger.describe(), n_atoms=len(atoms),
    )
    learner.checkpoint(atoms, extra={"finished": True})
    import json

    (rd / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _count_reference_calls(store: LabelStore) -> int:
    """Reference calls made by the run: every stored label and every recorded failure."""
    return len(store) + store.n_failures


def _evaluate(cfg, rd, learner, reference, start) -> dict[str, Any]:
    frames = _validation_frames(cfg, start, reference, rd)
    err_by_T: dict[str, list[np.ndarray]] = {}
    f_true, f_pred, inside = [], [], []
    for a in frames:
        p = learner.committee
        b = a.copy()
        b.calc = p
        F = b.get_forces()
        Fr = a.calc.results["forces"] if a.calc is not None else a.get_forces()
        std = b.calc.results["forces_std"]
        f_true.append(Fr.ravel())
        f_pred.append(F.ravel())
        inside.append((np.abs(F - Fr) <= std).ravel())
        key = f"{a.info.get('temperature_K', 0):.0f}"
        err_by_T.setdefault(key, []).append((F - Fr).ravel())
    ft, fp = np.concatenate(f_true), np.concatenate(f_pred)
    out = {
        "validation_frames": len(frames),
        "force_rmse": float(np.sqrt(np.mean((fp - ft) ** 2))),
        "force_mae": float(np.mean(np.abs(fp - ft))),
        "force_rmse_by_temperature": {
            k: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for k, v in err_by_T.items()
        },
        "sigma_coverage_1": float(np.mean(np.concatenate(inside))),
    }
    from potlearn_ase.analysis.plots import parity_plot

    out["parity_png"] = str(parity_plot(ft, fp, rd / "parity_forces.png", label="force (eV/A)"))
    return out


__getattr__ = moved_attribute(__name__, RENAMED_CONFIGS)
