"""Reference calls in worker processes, each one on disk from submission to storage.

:class:`AsyncLabeller` runs :meth:`Reference.label
<potlearn_ase.learners.reference.Reference.label>` in a pool of worker processes while the
caller (an MD loop) goes on. Each worker builds its calculator once, from the picklable
reference, and keeps it for every call it makes.

Nothing of a call is held in memory only. With a ``directory`` (a run's ``pending/``):

1. :meth:`~AsyncLabeller.submit` first writes the structure, the committee's prediction of
   its forces and the step numbers to ``<hash>.npz`` (atomically: temporary file, fsync,
   rename), then hands the structure to a worker;
2. the worker writes its result to ``<hash>.result.npz`` (atomically) before returning it;
3. the caller stores the label, then calls :meth:`~AsyncLabeller.forget`, which deletes both.

A run killed at any moment is put right by :meth:`~AsyncLabeller.recover`: a structure
already in the label store is dropped, one whose result file exists is stored from it (no new
call), and only one whose call never returned is submitted again. Workers die with the
process that made them (Linux ``PR_SET_PDEATHSIG``), so a killed run leaves no call running
that could finish twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data.records import structure_hash
from potlearn_ase.learners.reference import LabelResult, Reference

__all__ = ["Arrival", "AsyncLabeller"]

log = logging.getLogger(__name__)

_RESULT = ".result.npz"
_REFERENCE: Reference | None = None  # a worker process's reference (set by _init_worker)


@dataclass
class Arrival:
    """A finished reference call and what was known when the structure was submitted.

    Attributes
    ----------
    key : str
        The structure's :func:`~potlearn_ase.data.records.structure_hash`.
    atoms : ase.Atoms
        The submitted structure.
    result : LabelResult
        The outcome of the call.
    pred_forces : numpy.ndarray
        The committee members' forces (M, N, 3) predicted at submission, for the
        prequential calibration ratios.
    meta : dict
        ``md_step`` and ``learner_step`` at submission and the ``uncertainty`` seen then.
    recovered : bool
        The result was read back from its file after a restart (the call was made by an
        earlier process).
    """

    key: str
    atoms: Atoms
    result: LabelResult
    pred_forces: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False


@dataclass
class _Job:
    atoms: Atoms
    pred_forces: np.ndarray
    meta: dict[str, Any]
    future: Future | None = None


class AsyncLabeller:
    """Label structures in worker processes without waiting for them.

    Parameters
    ----------
    reference : Reference
        The reference; it must be picklable (one made by ``Reference.from_spec``, or with a
        module-level ``factory``).
    workers : int
        Worker processes, and the most calls that run at once.
    directory : path, optional
        Where each pending call is recorded (see the module notes); None keeps nothing on
        disk (a killed process then loses its pending calls).
    executor : concurrent.futures.Executor, optional
        Run the calls here instead of an own pool; its workers must have run
        ``_init_worker(reference, None)``. By default the pool is made here: worker
        processes, or an ``mpi4py.futures.MPIPoolExecutor`` over the other MPI ranks when
        ``reference.pool`` is ``"mpi"``.
    mp_context : str
        Start method of the own pool: ``"spawn"`` (the default) or ``"forkserver"``; never
        ``"fork"`` of a process running torch threads.
    """

    def __init__(
        self,
        reference: Reference,
        workers: int,
        *,
        directory: str | os.PathLike | None = None,
        executor: Executor | None = None,
        mp_context: str = "spawn",
    ):
        self.reference = reference
        self.workers = int(workers)
        self.directory = Path(directory) if directory is not None else None
        self.mp_context = mp_context
        self._given = executor
        self._executor: Executor | None = executor
        self._jobs: dict[str, _Job] = {}

    # ------------------------------------------------------------------ pool
    def _pool(self) -> Executor:
        if self._executor is None and getattr(self.reference, "pool", "process") == "mpi":
            from mpi4py.futures import MPIPoolExecutor

            # the MPI job ends every rank when one dies: no parent watch (ranks may be remote)
            self._executor = MPIPoolExecutor(
                max_workers=self.workers, initializer=_init_worker, initargs=(self.reference, None)
            )
        elif self._executor is None:
            import multiprocessing

            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(self.mp_context),
                initializer=_init_worker,
                initargs=(self.reference, os.getpid()),
            )
        return self._executor

    def start(self, *, wait: bool = False) -> None:
        """Start the workers now (each imports the package once), not at the first call.

        With ``wait``, return once every worker is ready. Does nothing when they run.
        """
        if self._executor is not None and not wait:
            return
        pool = self._pool()
        if self._given is None:
            pings = [pool.submit(_ping) for _ in range(self.workers)]
            if wait:
                for p in pings:
                    p.result()

    def close(self) -> None:
        """Shut an own pool down (after the running calls); a later submit starts another."""
        if self._executor is not None and self._given is None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ------------------------------------------------------------------ calls
    @property
    def pending(self) -> int:
        """Calls submitted and not yet handed back by :meth:`done` or :meth:`wait_all`."""
        return len(self._jobs)

    def is_pending(self, atoms: Atoms) -> bool:
        """Whether ``atoms`` was submitted and its result not yet handed back."""
        return structure_hash(atoms) in self._jobs

    def submit(
        self, atoms: Atoms, pred_forces: np.ndarray, meta: Mapping[str, Any]
    ) -> str:
        """Record ``atoms`` durably (with a ``directory``), then start its reference call.

        Parameters
        ----------
        atoms : ase.Atoms
            The structure (copied).
        pred_forces : numpy.ndarray
            The committee members' forces (M, N, 3) predicted for it now.
        meta : mapping
            JSON-able: ``md_step``, ``learner_step``, ``uncertainty``.

        Returns
        -------
        str
            The structure's hash, the key of its call.
        """
        key = structure_hash(atoms)
        if key in self._jobs:
            return key
        atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                      pbc=atoms.pbc)
        job = _Job(atoms, np.asarray(pred_forces, dtype=float), dict(meta))
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            _save_npz(self.directory / f"{key}.npz", _job_arrays(job))
        self._start(key, job)
        return key

    def _start(self, key: str, job: _Job) -> None:
        out = None if self.directory is None else str(self.directory / f"{key}{_RESULT}")
        job.future = self._pool().submit(_work, job.atoms, out)
        self._jobs[key] = job

    def done(self) -> list[Arrival]:
        """The calls that finished since the last look, without waiting (submission order)."""
        return [self._arrival(k) for k, j in list(self._jobs.items())
                if j.future is not None and j.future.done()]

    def wait_all(self) -> list[Arrival]:
        """Wait for every pending call; their results in submission order."""
        return [self._arrival(k) for k in list(self._jobs)]

    def _arrival(self, key: str) -> Arrival:
        job = self._jobs.pop(key)
        assert job.future is not None
        try:
            res = job.future.result()
        except Exception as exc:  # the worker died (BrokenProcessPool), or unpicklable data
            log.error("reference call on %s failed in its worker: %s", key[:12], exc)
            res = LabelResult(None, False, f"worker: {type(exc).__name__}: {exc}")
            if self._given is None and self._executor is not None:
                self._executor.shutdown(wait=False)  # a broken pool: the next call makes one
                self._executor = None
        return Arrival(key, job.atoms, res, job.pred_forces, job.meta)

    def forget(self, key: str) -> None:
        """Delete the files of a call whose outcome is stored (call after the store write)."""
        if self.directory is None:
            return
        for name in (f"{key}.npz", f"{key}{_RESULT}"):
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ restart
    def recover(self, store: Any) -> tuple[list[Arrival], int]:
        """Put the calls of a killed process in order; see the module notes.

        Parameters
        ----------
        store : LabelStore
            The run's label store.

        Returns
        -------
        arrivals : list of Arrival
            Calls that ended before the kill and whose outcome is not stored yet (to be
            stored by the caller, then :meth:`forget`).
        resubmitted : int
            Calls that never returned, submitted again.
        """
        if self.directory is None or not self.directory.is_dir():
            return [], 0
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        arrivals, again = [], 0
        for path in sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime):
            if path.name.endswith(_RESULT):
                continue
            key = path.name[: -len(".npz")]
            job = _load_job(path)
            if store.find(job.atoms) is not None or store.find_failure(job.atoms) is not None:
                self.forget(key)  # stored before the kill; its files outlived it
                continue
            done = self.directory / f"{key}{_RESULT}"
            if done.exists():
                arrivals.append(Arrival(key, job.atoms, _load_result(done, job.atoms),
                                        job.pred_forces, job.meta, recovered=True))
                continue
            job.meta["resubmitted"] = True  # its first call never returned
            self._start(key, job)
            again += 1
        if arrivals or again:
            log.info("%s: %d reference results recovered, %d interrupted calls submitted again",
                     self.directory, len(arrivals), again)
        return arrivals, again


# ---------------------------------------------------------------------- files


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` to ``path`` atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def _job_arrays(job: _Job) -> dict[str, Any]:
    a = job.atoms
    return {
        "numbers": a.numbers, "positions": a.positions, "cell": a.cell.array, "pbc": a.pbc,
        "pred_forces": job.pred_forces, "meta": np.array(json.dumps(job.meta)),
    }


def _load_job(path: Path) -> _Job:
    with np.load(path, allow_pickle=False) as z:
        atoms = Atoms(numbers=z["numbers"], positions=z["positions"], cell=z["cell"],
                      pbc=z["pbc"])
        return _Job(atoms, np.array(z["pred_forces"]), json.loads(str(z["meta"])))


def _save_result(path: Path, res: LabelResult) -> None:
    info: dict[str, Any] = {"ok": res.ok, "error": res.error, "wall_time": res.wall_time,
                            "attempts": res.attempts}
    arrays: dict[str, Any] = {}
    if res.ok and res.atoms is not None:
        calc_results = res.atoms.calc.results  # a SinglePointCalculator's
        arrays = {k: np.asarray(v, dtype=float) for k, v in calc_results.items()}
        info["reference_fallback"] = res.atoms.info.get("reference_fallback")
    _save_npz(path, {**{f"r_{k}": v for k, v in arrays.items()},
                     "info": np.array(json.dumps(info))})


def _load_result(path: Path, atoms: Atoms) -> LabelResult:
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        results = {k[2:]: np.array(z[k]) for k in z.files if k.startswith("r_")}
    out = None
    if info["ok"]:
        out = atoms.copy()
        out.calc = SinglePointCalculator(
            out, **{k: float(v) if v.ndim == 0 else v for k, v in results.items()})
        if info.get("reference_fallback") is not None:
            out.info["reference_fallback"] = info["reference_fallback"]
    return LabelResult(out, bool(info["ok"]), info["error"], float(info["wall_time"]),
                       int(info["attempts"]))


# ---------------------------------------------------------------------- worker side


def _die_with_parent(main_pid: int) -> None:
    """Linux: this process gets SIGKILL when its parent ends; and ends now if ``main_pid``
    has already ended (a kill before this ran)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    try:
        os.kill(main_pid, 0)
    except ProcessLookupError:
        os._exit(1)


def _init_worker(reference: Reference, main_pid: int | None) -> None:
    """Initializer of a worker process: keep the reference (its calculator is made once);
    with ``main_pid``, die with the process that made the worker."""
    global _REFERENCE
    if main_pid is not None:
        _die_with_parent(main_pid)
    _REFERENCE = reference


def _ping() -> float:
    return time.time()


def _work(atoms: Atoms, result_path: str | None) -> LabelResult:
    """One reference call in a worker; the result is on disk before it is returned."""
    assert _REFERENCE is not None, "the worker was not initialised"
    path = None if result_path is None else Path(result_path)
    # saved before the call counts as ended: a call that ended is never lost to a kill
    return _REFERENCE.label(atoms, persist=None if path is None else partial(_save_result, path))
