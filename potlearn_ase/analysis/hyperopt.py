"""Hyperparameter optimisation of linear ACE committees: validation error against evaluation cost.

Each trial fits a linear ACE committee on the training structures with one choice of the
descriptor's cutoff and basis sizes (``n_radial``, ``l_max``, ``body_order``), the ridge
parameter ``lam`` and the energy/force weights of the fit, and scores it on the validation
structures only:

* ``error = force_rmse + energy_error_weight * energy_rmse``: force RMSE (eV/A) from the force
  errors alone and energy RMSE (eV/atom) from the energy errors alone, so that the score does
  not move with the fit weights being searched;
* ``cost``: the measured wall time of energy + forces of the fitted committee, in microseconds
  per atom (the fastest of ``timing_repeats`` runs over the validation structures);
* ``loss = error + cost_weight * cost``.

Searchers: ``grid``, ``random``, ``lhs`` (Latin hypercube, :mod:`scipy.stats.qmc`) and ``tpe``
(optuna's tree-structured Parzen estimator). The descriptor's normal equations are kept per
descriptor setting and split by row kind, so trials that only change ``lam`` or the weights
cost one linear solve. Results: ``trials.jsonl``, one line per trial written as it ends (a
killed search keeps them and ``resume`` continues it, see :mod:`.trial_log`), a JSON table of
all trials and a PNG of error against cost with the Pareto front. A time budget
(``time_budget_s``) stops the search before a new trial would start.

The search space and configuration are in :mod:`~potlearn_ase.analysis.hyperopt_settings`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.analysis.hyperopt_settings import (
    FloatRange,
    HyperoptConfig,
    IntRange,
    SearchSpace,
)
from potlearn_ase.analysis.metrics import rmse
from potlearn_ase.analysis.trial_log import TrialLog
from potlearn_ase.config import load_config
from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig, design_rows
from potlearn_ase.models.posterior import NormalEquations

__all__ = [
    "FloatRange",
    "HyperoptConfig",
    "HyperoptResult",
    "IntRange",
    "SearchSpace",
    "Trial",
    "TrialLog",
    "hyperopt",
    "pareto_front",
    "pareto_plot",
    "run_hyperopt",
]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Trial:
    """One evaluated hyperparameter setting (errors on validation data only)."""

    number: int
    params: dict[str, Any]
    energy_rmse: float
    force_rmse: float
    error: float
    cost_us_per_atom: float
    loss: float
    fit_time_s: float


@dataclass(frozen=True)
class HyperoptResult:
    """All trials, the best one (lowest loss) and the Pareto-optimal ones (error vs cost).

    ``stopped`` says why the search ended: ``"n_trials"`` or ``"time_budget"``.
    """

    trials: list[Trial]
    config: HyperoptConfig
    stopped: str = "n_trials"

    @property
    def best(self) -> Trial:
        return min(self.trials, key=lambda t: t.loss)

    def pareto(self) -> list[Trial]:
        idx = pareto_front([t.cost_us_per_atom for t in self.trials],
                           [t.error for t in self.trials])
        return [self.trials[i] for i in idx]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "cost_weight": self.config.cost_weight,
            "energy_error_weight": self.config.energy_error_weight,
            "units": {"energy_rmse": "eV/atom", "force_rmse": "eV/A",
                      "error": "eV/A + energy_error_weight x eV/atom",
                      "cost_us_per_atom": "us/atom", "fit_time_s": "s"},
            "stopped": self.stopped,
            "best": asdict(self.best),
            "pareto": [t.number for t in self.pareto()],
            "trials": [asdict(t) for t in self.trials],
        }


# --------------------------------------------------------------------------- searchers
def _from_unit(spec: Any, u: float) -> Any:
    if isinstance(spec, FloatRange):
        if spec.log:
            return float(np.exp(np.log(spec.low) + u * (np.log(spec.high) - np.log(spec.low))))
        return float(spec.low + u * (spec.high - spec.low))
    if isinstance(spec, IntRange):
        return int(spec.low + min(int(u * (spec.high - spec.low + 1)), spec.high - spec.low))
    return spec[min(int(u * len(spec)), len(spec) - 1)]


def _grid_values(spec: Any, n: int) -> list[Any]:
    if isinstance(spec, FloatRange):
        if spec.log:
            return [float(v) for v in np.geomspace(spec.low, spec.high, n)]
        return [float(v) for v in np.linspace(spec.low, spec.high, n)]
    if isinstance(spec, IntRange):
        return list(range(spec.low, spec.high + 1))
    return list(spec)


def _planned(config: HyperoptConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Every setting of a grid, random or Latin-hypercube search, up front."""
    dims = config.space.dimensions()
    names = [n for n, _ in dims]
    n = config.n_trials
    if config.method == "grid":
        grid = list(itertools.product(*[_grid_values(s, config.grid_points) for _, s in dims]))
        if len(grid) > n:
            logger.warning("grid of %d settings subsampled evenly to n_trials=%d", len(grid), n)
            keep = np.unique(np.linspace(0, len(grid) - 1, n).round().astype(int))
            grid = [grid[i] for i in keep]
        return [dict(zip(names, g)) for g in grid]
    if config.method == "random":
        U = rng.random((n, len(dims)))
    else:
        from scipy.stats import qmc

        U = qmc.LatinHypercube(d=len(dims), rng=rng).random(n)
    return [{name: _from_unit(spec, u) for (name, spec), u in zip(dims, row)} for row in U]


def _optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    import optuna

    out: dict[str, Any] = {}
    for name, spec in space.dimensions():
        if isinstance(spec, FloatRange):
            out[name] = optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)
        elif isinstance(spec, IntRange):
            out[name] = optuna.distributions.IntDistribution(spec.low, spec.high)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(list(spec))
    return out


# --------------------------------------------------------------------------- one trial
class _Objective:
    """Fits and scores one setting; keeps per-row-kind normal equations per descriptor."""

    def __init__(self, train: Sequence[Atoms], val: Sequence[Atoms], config: HyperoptConfig):
        for k, a in enumerate(train):
            require_labels(a, energy=True, forces=True, where=f"training structure {k}")
        for k, a in enumerate(val):
            require_labels(a, energy=True, forces=True, where=f"validation structure {k}")
        self.train, self.val, self.config = list(train), list(val), config
        self.elements = sorted({s for a in self.train for s in a.get_chemical_symbols()})
        self.cache: dict[tuple, tuple[ACEDescriptor, list[NormalEquations]]] = {}
        self.E_val = np.array([get_labels(a)["energy"] / len(a) for a in self.val])
        self.F_val = np.concatenate([get_labels(a)["forces"] for a in self.val])

    def _normal_equations(self, ace: ACEConfig) -> tuple[ACEDescriptor, list[NormalEquations]]:
        key = tuple(asdict(ace).values())
        if key not in self.cache:
            desc = ACEDescriptor(self.elements, ace)
            P = len(self.elements) * (desc.n_features + 1)
            parts = [NormalEquations(P) for _ in range(3)]
            # weights 1, 2, 3 tag energy, force and stress rows (w = weight**2 = 1, 4, 9)
            tag = LinearFitConfig(energy_weight=1.0, force_weight=2.0, stress_weight=3.0)
            for start in range(0, len(self.train), tag.batch_size):
                A, y, w = design_rows(desc, self.train[start : start + tag.batch_size], tag)
                for kind, ne in enumerate(parts):
                    sel = np.isclose(w, (kind + 1) ** 2)
                    ne.add(A[sel], y[sel], 1.0)
            self.cache = {key: (desc, parts)}  # one descriptor's rows at a time
        return self.cache[key]

    def __call__(self, number: int, params: dict[str, Any]) -> Trial:
        cfg = self.config
        t0 = time.perf_counter()
        ace = ACEConfig(
            cutoff=float(params["cutoff"]), n_radial=int(params["n_radial"]),
            l_max=int(params["l_max"]), body_order=int(params["body_order"]),
        )
        desc, parts = self._normal_equations(ace)
        lam = params["lam"]
        fit = LinearFitConfig(
            energy_weight=float(params["energy_weight"]),
            force_weight=float(params["force_weight"]),
            stress_weight=cfg.stress_weight,
            lam=lam if lam == "evidence" else float(lam),
            n_members=cfg.n_members,
        )
        ne = NormalEquations(parts[0].n_params)
        for part, wt in zip(parts, (fit.energy_weight, fit.force_weight, fit.stress_weight)):
            if wt <= 0:  # design_rows leaves zero-weight rows out: they count for nothing
                continue
            ne.AtA += wt**2 * part.AtA
            ne.Aty += wt**2 * part.Aty
            ne.yty += wt**2 * part.yty
            ne.n_rows += part.n_rows
        S, K = len(self.elements), desc.n_features
        model = LinearCommittee(desc, torch.zeros(fit.n_members, S, K + 1), normal_equations=ne,
                                config=fit)
        model.update([], rng=np.random.default_rng(cfg.seed + number))  # solve, draw members
        fit_time = time.perf_counter() - t0
        E_pred, F_pred = [], []
        for a in self.val:
            pred = model.predict(a, stress=False)
            E_pred.append(pred["energy"].mean() / len(a))
            F_pred.append(pred["forces"].mean(0))
        e_rmse = rmse(self.E_val, np.array(E_pred))
        f_rmse = rmse(self.F_val, np.concatenate(F_pred))
        cost = self._cost(model)
        error = f_rmse + cfg.energy_error_weight * e_rmse
        return Trial(
            number=number, params=dict(params), energy_rmse=e_rmse, force_rmse=f_rmse,
            error=error, cost_us_per_atom=cost, loss=error + cfg.cost_weight * cost,
            fit_time_s=fit_time,
        )

    def _cost(self, model: LinearCommittee) -> float:
        n_atoms = sum(len(a) for a in self.val)
        model.predict(self.val[0], stress=False)  # warm-up
        best = np.inf
        for _ in range(max(1, self.config.timing_repeats)):
            t0 = time.perf_counter()
            for a in self.val:
                model.predict(a, stress=False)
            best = min(best, time.perf_counter() - t0)
        return 1e6 * best / n_atoms


# --------------------------------------------------------------------------- driver
def hyperopt(
    train: Sequence[Atoms],
    val: Sequence[Atoms],
    config: HyperoptConfig | None = None,
    *,
    progress: bool = False,
    log: TrialLog | None = None,
) -> HyperoptResult:
    """Search linear-ACE hyperparameters; every trial is scored on ``val`` only.

    Parameters
    ----------
    train, val : sequences of ase.Atoms
        Labelled (energy and forces) training and validation structures.
    config : HyperoptConfig
        Search space, method, number of trials, cost weight, time budget.
    progress : bool
        Show a progress bar.
    log : TrialLog, optional
        Where each finished trial is appended; the trials it already holds are not run
        again (a grid, random or Latin-hypercube search continues its plan; a TPE search
        tells optuna the finished trials first, then asks for new ones).
    """
    config = config or HyperoptConfig()
    if not train or not val:
        raise ValueError("hyperopt needs training and validation structures")
    rng = np.random.default_rng(config.seed)
    objective = _Objective(train, val, config)
    trials: list[Trial] = sorted(log.trials, key=lambda t: t.number) if log else []
    done = {t.number: t for t in trials}
    t0 = time.perf_counter()
    budget = config.time_budget_s
    stopped = "n_trials"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_trials, initial=min(len(done), config.n_trials),
                   desc=f"hyperopt ({config.method})", unit="trial")

    def run(number: int, params: dict[str, Any]) -> Trial | None:
        nonlocal stopped
        if budget is not None and time.perf_counter() - t0 >= budget:
            stopped = "time_budget"
            return None
        trial = objective(number, params)
        if log is not None:
            log.append(trial)
        trials.append(trial)
        if bar is not None:
            bar.update()
        return trial

    if config.method == "tpe":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=config.seed))
        dists = _optuna_distributions(config.space)
        for t in trials:
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=dists,
                                                      value=t.loss))
        for k in range(max(done, default=-1) + 1, config.n_trials):
            ot = study.ask(dists)
            trial = run(k, dict(ot.params))
            if trial is None:
                break
            study.tell(ot, trial.loss)
    else:
        for k, params in enumerate(_planned(config, rng)):
            if k in done:
                if json.loads(json.dumps(params)) != done[k].params:
                    raise ConfigError(
                        f"trial {k} of the log had {done[k].params}, the search plans "
                        f"{params} now: resume with the n_trials of the first run"
                    )
                continue
            if run(k, params) is None:
                break
    if bar is not None:
        bar.close()
    if stopped == "time_budget":
        logger.warning("time budget of %g s spent: stopped after %d trials", budget, len(trials))
    if not trials:
        raise ConfigError(f"time_budget_s = {budget} s ended the search before its first trial")
    for t in trials:
        logger.info("trial %d: error %.4g, cost %.3g us/atom, %s", t.number, t.error,
                    t.cost_us_per_atom, t.params)
    return HyperoptResult(trials=trials, config=config, stopped=stopped)


def pareto_front(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the trials no other trial beats on both cost and error, by increasing cost."""
    c, e = np.asarray(costs, dtype=float), np.asarray(errors, dtype=float)
    front, best = [], np.inf
    for i in np.lexsort((e, c)):
        if e[i] < best:
            front.append(int(i))
            best = e[i]
    return front


def pareto_plot(result: HyperoptResult, path: str | os.PathLike) -> Path:
    """PNG of validation error against cost (us/atom): every trial, the Pareto front, the best."""
    from potlearn_ase.analysis.plots import new_figure, save_figure

    fig = new_figure((5.2, 4.0))
    ax = fig.add_subplot()
    cost = np.array([t.cost_us_per_atom for t in result.trials])
    err = np.array([t.error for t in result.trials])
    ax.scatter(cost, err, s=14, color="0.6", label="trials")
    front = pareto_front(cost, err)
    ax.step(cost[front], err[front], where="post", color="tab:red", lw=1.2)
    ax.scatter(cost[front], err[front], s=22, color="tab:red", label="Pareto front")
    b = result.best
    ax.scatter([b.cost_us_per_atom], [b.error], marker="*", s=140, color="tab:blue",
               label=f"lowest loss (#{b.number})", zorder=3)
    ax.set_xlabel("cost (us/atom, energy + forces)")
    ax.set_ylabel(f"error: F RMSE + {result.config.energy_error_weight:g} x E RMSE")
    if err.max() > 5 * max(err.min(), 1e-12):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"{result.config.method} search, {len(result.trials)} trials", fontsize=9)
    return save_figure(fig, path)


def run_hyperopt(
    config: HyperoptConfig | str | os.PathLike | dict[str, Any],
    *,
    output_dir: str | os.PathLike | None = None,
    progress: bool = False,
    resume: bool = False,
) -> HyperoptResult:
    """Run a search from a configuration (file, mapping or object) with ``train``/``val`` files.

    Each finished trial is appended to ``output_dir/trials.jsonl`` as it ends; at the end
    ``trials.json`` (every trial, the best and the Pareto front) and ``pareto.png`` are
    written to ``output_dir`` (default: the config's). ``resume`` continues the trials of an
    earlier, killed or shorter, search in the same folder (:class:`TrialLog`).
    """
    from potlearn_ase.data.io import read

    config = load_config(HyperoptConfig, config)
    for key in ("train", "val"):
        if getattr(config, key) is None:
            raise ConfigError(f"hyperopt configuration needs key {key!r} (a structure file)")
    assert config.train is not None and config.val is not None
    out = output_dir or config.output_dir
    if resume and out is None:
        raise ConfigError("resuming a search needs its output folder (output_dir)")
    log = TrialLog(Path(out) / "trials.jsonl", config, resume=resume) if out is not None else None
    result = hyperopt(list(read(config.train)), list(read(config.val)), config,
                      progress=progress, log=log)
    if out is not None:
        out = Path(out)
        (out / "trials.json").write_text(json.dumps(result.to_dict(), indent=2))
        pareto_plot(result, out / "pareto.png")
    return result
