"""The reference: any ASE calculator, wrapped so a failed calculation never stops the MD.

:class:`Reference` labels structures with energy, forces and (for periodic cells) stress.
A calculation that raises (``CalculationFailed`` from an SCF that did not converge, any
other exception), returns non-finite numbers or exceeds ``timeout`` seconds is retried
``retries`` times and then reported in a :class:`LabelResult` with ``ok=False``: the caller
records the failure and carries on.

Calculators are not thread-safe, so each call borrows a calculator from a small pool: with a
``factory`` a new calculator is built whenever every existing one is busy (several threads
then label in parallel), with a single ``calculator`` instance the calls take turns.

Timeouts run the calculation in a daemon worker thread and stop waiting after ``timeout``
seconds. A Python thread cannot be killed: the abandoned calculation runs on in the
background and returns its calculator to the pool when it ends. With a ``factory`` the next
call builds a fresh calculator meanwhile; with a single instance the next call waits at most
``timeout`` seconds for it and otherwise fails as "busy".

:meth:`Reference.from_spec` builds a reference from a configuration; the calculators it can
name are checked and built in :mod:`potlearn_ase.learners.reference_specs`; the
:class:`LabelResult` record is defined in :mod:`potlearn_ase.learners.reference_result`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_properties
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.reference_result import LabelResult, log_reference_call
from potlearn_ase.learners.reference_specs import check_workers, mpi_workers, reference_kwargs

__all__ = ["LabelResult", "Reference"]

log = logging.getLogger(__name__)


class _Busy(Exception):
    """No calculator became free in time."""


class _Timeout(Exception):
    """The calculation did not finish in time."""


class Reference:
    """A reference calculator for labelling, with retries, timeouts and parallel labelling.

    Parameters
    ----------
    calculator : ase Calculator, optional
        The calculator instance (used by one call at a time).
    factory : callable, optional
        A zero-argument callable returning a new calculator; use it instead of
        ``calculator`` for parallel labelling, and make it picklable (a module-level
        function or a ``functools.partial``) for process pools.
    name : str, optional
        Short name for provenance (default: the calculator's class name, lower case).
    params : dict, optional
        JSON-able parameters for provenance (default: the calculator's JSON-able
        ``parameters``).
    timeout : float, optional
        Seconds to wait for one calculation; None waits for ever (and runs in the calling
        thread).
    retries : int
        Further attempts after a failed one.
    properties : sequence of str
        ASE properties to compute; ``energy`` and ``forces`` at least.
    stress : bool, optional
        Compute the stress: None means when the cell is periodic in all three directions and
        the calculator implements it.
    max_consecutive_failures : int, optional
        An on-the-fly learner stops (raising
        :class:`~potlearn_ase.errors.ReferenceFailure`) after this many failed calls in a
        row, each after its retries, rather than run on with an untrained committee; None
        never stops.
    fallbacks : sequence of callables, optional
        Calculator factories for the retries, in order: retry ``k`` builds its calculator
        with ``fallbacks[k - 1]`` (the last one for later retries), e.g. with more SCF
        iterations or wider smearing; ``retries`` is raised to ``len(fallbacks)``. A label
        made by a fallback records its index in ``info["reference_fallback"]``.
    preflight : callable, optional
        ``preflight(atoms)`` raises :class:`~potlearn_ase.errors.ConfigError` when the
        reference cannot label ``atoms`` (see :meth:`check`).
    workers : int or "mpi"
        Worker processes that label while an on-the-fly run's MD goes on
        (:mod:`~potlearn_ase.learners.otf_async`); 0, the default, labels in the MD process
        and the MD waits. At most the cores this process may use; ``"mpi"``: the other ranks
        of the MPI job (``pool`` is then ``"mpi"`` and ``workers`` their count).
    """

    def __init__(
        self,
        calculator: Calculator | None = None,
        *,
        factory: Callable[[], Calculator] | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retries: int = 1,
        properties: Sequence[str] = ("energy", "forces"),
        stress: bool | None = None,
        max_consecutive_failures: int | None = 5,
        fallbacks: Sequence[Callable[[], Calculator]] = (),
        preflight: Callable[[Atoms], None] | None = None,
        workers: int = 0,
    ):
        if (calculator is None) == (factory is None):
            raise ConfigError("Reference needs exactly one of calculator= and factory=")
        if factory is not None and not callable(factory):
            raise ConfigError(f"Reference factory must be callable, got {type(factory).__name__}")
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ConfigError(
                f"Reference timeout must be a positive number of seconds, got {timeout!r}"
            )
        if isinstance(retries, bool) or int(retries) != retries or retries < 0:
            raise ConfigError(f"Reference retries must be an integer >= 0, got {retries!r}")
        props = tuple(properties)
        for p in props:
            if p not in all_properties:
                raise ConfigError(f"Reference properties: unknown ASE property {p!r}")
        for p in ("energy", "forces"):
            if p not in props:
                props = (p, *props) if p == "energy" else (*props, p)
        if stress is not None and not isinstance(stress, bool):
            raise ConfigError(f"Reference stress must be true, false or null, got {stress!r}")
        limit = max_consecutive_failures
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ConfigError(
                f"Reference max_consecutive_failures must be an integer >= 1 or null, "
                f"got {limit!r}"
            )
        self.max_consecutive_failures = limit
        # "mpi": the other ranks of the MPI job (their count in workers, pool "mpi")
        pool = check_workers(workers, "Reference workers")
        self.pool = "mpi" if pool == "mpi" else "process"
        self.workers = mpi_workers("Reference workers") if pool == "mpi" else int(pool)
        if not all(callable(f) for f in fallbacks):
            raise ConfigError("Reference fallbacks must be callables returning calculators")
        self.calculator = calculator
        self.factory = factory
        self.fallbacks = tuple(fallbacks)
        self.preflight = preflight
        retries = max(int(retries), len(self.fallbacks))
        self.timeout = None if timeout is None else float(timeout)
        self.retries = int(retries)
        self.properties = props
        self.stress = stress
        if name:
            self.name = str(name)
        elif calculator is not None:
            self.name = type(calculator).__name__.lower()
        else:
            self.name = getattr(factory, "__name__", None) or "reference"
        self.params = dict(params) if params is not None else _json_params(calculator)
        try:
            json.dumps(self.params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Reference params must be JSON-able: {exc}") from None
        self._init_pool()

    # ------------------------------------------------------------------ pool
    def _init_pool(self) -> None:
        self._cond = threading.Condition()
        self._idle: list[Calculator] = [self.calculator] if self.calculator is not None else []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_cond", "_idle"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_pool()

    def _acquire(self, wait: float | None) -> Calculator:
        with self._cond:
            if self._idle:
                return self._idle.pop()
            if self.factory is None:
                if not self._cond.wait_for(lambda: bool(self._idle), timeout=wait):
                    raise _Busy(f"the calculator is still busy with an earlier call after {wait} s")
                return self._idle.pop()
        calc = self.factory()
        if not isinstance(calc, Calculator) and not hasattr(calc, "get_property"):
            raise TypeError(f"the factory returned {type(calc).__name__}, not an ASE calculator")
        return calc

    def _release(self, calc: Calculator) -> None:
        with self._cond:
            self._idle.append(calc)
            self._cond.notify()

    def make_calculator(self) -> Calculator:
        """A calculator to use directly (e.g. to drive reference MD): a new one from the
        factory, or the wrapped instance (not thread-safe: do not label with it meanwhile)."""
        if self.factory is not None:
            return self.factory()
        assert self.calculator is not None
        return self.calculator

    # ------------------------------------------------------------------ labelling
    def _wants_stress(self, atoms: Atoms, calc: Calculator) -> bool:
        if "stress" in self.properties:
            return True
        if self.stress is not None:
            return self.stress
        implemented = getattr(calc, "implemented_properties", ())
        return bool(atoms.pbc.all()) and "stress" in implemented

    def _compute(self, atoms: Atoms, calc: Calculator, fresh: bool) -> dict[str, Any]:
        """One calculation on a copy of ``atoms``; raises on any failure."""
        work = atoms.copy()
        if fresh and hasattr(calc, "reset"):  # file-based calculators keep no state to reset
            calc.reset()
        props = list(self.properties)
        if self._wants_stress(atoms, calc) and "stress" not in props:
            props.append("stress")
        results: dict[str, Any] = {}
        for p in props:
            value = calc.get_property(p, work)
            arr = np.array(value, dtype=float, copy=True)
            if not np.all(np.isfinite(arr)):
                raise FloatingPointError(f"the calculator returned non-finite {p}")
            results[p] = float(arr) if arr.ndim == 0 else arr
        if np.shape(results["forces"]) != (len(atoms), 3):
            raise ValueError(
                f"the calculator returned forces of shape {np.shape(results['forces'])} "
                f"for {len(atoms)} atoms"
            )
        return results

    def check(self, atoms: Atoms) -> None:
        """Check, before any MD, that this reference can label ``atoms``.

        Raises
        ------
        ConfigError
            E.g. a DFT reference has no pseudopotential or PAW setup for an element.
        """
        if self.preflight is not None:
            self.preflight(atoms)

    def _attempt(self, atoms: Atoms, attempt: int) -> dict[str, Any]:
        fresh = attempt > 0
        if fresh and self.fallbacks:
            fresh = False  # a new calculator: nothing to reset
            # a fallback calculator of its own, used once and dropped after the call
            fb = self.fallbacks[min(attempt, len(self.fallbacks)) - 1]
            own = fb()
            acquire: Callable[[float | None], Calculator] = lambda wait: own  # noqa: E731
            release: Callable[[Calculator], None] = lambda calc: None  # noqa: E731
        else:
            acquire, release = self._acquire, self._release
        if self.timeout is None:
            calc = acquire(None)
            try:
                return self._compute(atoms, calc, fresh)
            finally:
                release(calc)
        deadline = time.perf_counter() + self.timeout
        calc = acquire(self.timeout)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["results"] = self._compute(atoms, calc, fresh)
            except BaseException as exc:  # handed to the waiting caller
                box["error"] = exc
            finally:
                release(calc)
                done.set()

        threading.Thread(target=work, name=f"reference-{self.name}", daemon=True).start()
        if not done.wait(max(deadline - time.perf_counter(), 0.0)):
            raise _Timeout(f"no result within the timeout of {self.timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box["results"]

    def label(self, atoms: Atoms, persist: Any = None) -> LabelResult:
        """Label one structure; failures are returned, never raised.

        Parameters
        ----------
        atoms : ase.Atoms
            The structure (not modified; its own calculator is ignored).
        persist : callable, optional
            Called with the result before the call counts as ended (a worker saves it).

        Returns
        -------
        LabelResult
            ``ok=True`` with the labelled copy, or ``ok=False`` with the last error after
            ``1 + retries`` attempts.
        """
        t0 = time.perf_counter()
        error: str | None = None
        attempts = 0
        log_reference_call("start", atoms)
        for attempt in range(self.retries + 1):
            attempts += 1
            try:
                results = self._attempt(atoms, attempt)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                log.warning("reference %s failed on %s (attempt %d of %d): %s", self.name,
                            atoms.get_chemical_formula(), attempts, self.retries + 1, error)
                continue
            out = atoms.copy()
            out.calc = SinglePointCalculator(out, **results)
            if attempt > 0 and self.fallbacks:
                out.info["reference_fallback"] = min(attempt, len(self.fallbacks))
            res = LabelResult(out, True, None, time.perf_counter() - t0, attempts)
            break
        else:
            res = LabelResult(None, False, error, time.perf_counter() - t0, attempts)
        if persist is not None:
            persist(res)
        log_reference_call("end", atoms, ok=res.ok)
        return res

    def label_many(
        self,
        frames: Iterable[Atoms],
        *,
        executor: Executor | None = None,
        max_workers: int | None = None,
    ) -> list[LabelResult]:
        """Label several structures concurrently; results in the order of ``frames``.

        Parameters
        ----------
        frames : iterable of ase.Atoms
            The structures.
        executor : concurrent.futures.Executor, optional
            Where to run the calls: any executor (a ``ProcessPoolExecutor`` or
            ``mpi4py.futures.MPIPoolExecutor`` needs this Reference to be picklable, e.g. made
            with a picklable ``factory`` or by :meth:`from_spec`). Default: a thread pool of
            ``max_workers`` threads (default: one per structure, at most the CPU count),
            shut down on return.
        max_workers : int, optional
            Threads of the default pool.

        Returns
        -------
        list of LabelResult
            One per structure; an executor failure (e.g. a crashed worker process) is
            reported as a failed result too.
        """
        frames = list(frames)
        if not frames:
            return []
        own = executor is None
        if executor is None:
            n = max_workers or min(len(frames), os.cpu_count() or 1)
            executor = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="label")
        try:
            futures = [executor.submit(_label_one, self, a) for a in frames]
            out = []
            for i, f in enumerate(futures):
                try:
                    out.append(f.result())
                except Exception as exc:
                    log.error("labelling frame %d failed in the executor: %s", i, exc)
                    out.append(LabelResult(None, False, f"executor: {type(exc).__name__}: {exc}"))
            return out
        finally:
            if own:
                executor.shutdown(wait=True)

    def describe(self) -> dict[str, Any]:
        """JSON-able description: name, params and the wrapper's options."""
        return {
            "name": self.name,
            "params": self.params,
            "timeout": self.timeout,
            "retries": self.retries,
            "properties": list(self.properties),
            "stress": self.stress,
            "max_consecutive_failures": self.max_consecutive_failures,
            "fallbacks": len(self.fallbacks),
            "workers": self.workers,
            "pool": self.pool,
        }

    def __repr__(self) -> str:
        return f"Reference(name={self.name!r}, params={self.params!r})"

    # ------------------------------------------------------------------ specs
    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any] | Reference | None = None) -> Reference:
        """Build a reference from a name or a mapping (as in a configuration file).

        Parameters
        ----------
        spec : str or mapping
            ``"emt"`` or ``{"calculator": "emt"}`` (ASE's EMT, the default; option
            ``asap_cutoff``); ``{"calculator": "tblite", "method": "GFN1-xTB",
            "electronic_temperature": 3000, "max_iterations": 300, ...}`` (any ``TBLite``
            keyword; ``verbosity`` defaults to 0); ``{"calculator": "lammpslib",
            "lmpcmds": [...]}`` (ASE's LAMMPSlib, e.g. a SNAP; options ``atom_types``,
            ``keep_alive``); ``{"calculator": "gpaw", ...}`` (keyword arguments of
            ``gpaw.GPAW``); ``{"calculator": "espresso", ...}`` (keyword
            arguments of ``ase.calculators.espresso.Espresso``, plus ``command`` (default
            ``pw.x``, e.g. ``mpiexec -n 4 pw.x``), ``pseudo_dir`` and ``pseudopotentials``;
            each calculator gets its own scratch directory unless ``directory`` is given).
            GPAW and ESPRESSO take documented defaults (cutoff, k-points, smearing) and a
            ``fallback`` list of settings for the retries: see
            :mod:`potlearn_ase.learners.reference_dft`. Every spec may also hold the
            wrapper options ``name``, ``timeout``, ``retries``, ``properties``, ``stress``,
            ``max_consecutive_failures`` and ``workers``.

        Raises
        ------
        ConfigError
            For an unknown calculator or key, or a calculator whose package is missing
            (the message says what to install).
        """
        if isinstance(spec, Reference):
            return spec
        kwargs = reference_kwargs(spec)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"reference: {exc}") from None


def _label_one(reference: Reference, atoms: Atoms) -> LabelResult:
    """Module-level so process pools can pickle the call."""
    return reference.label(atoms)


def _json_params(calc: Calculator | None) -> dict[str, Any]:
    params = getattr(calc, "parameters", None) or {}
    out = {}
    for k, v in dict(params).items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out
