"""Committee training and reference calls spread over MPI ranks (mpi4py).

Run under ``mpiexec -n R``. The structures are read on rank 0 and broadcast once
(:func:`broadcast`); then

- linear committees: each rank accumulates the normal equations of its share of the
  structures, the accumulators are summed on rank 0 (in the serial order, or with one
  ``Allreduce``), rank 0 solves for the posterior and draws the members, and the result is
  broadcast (:func:`fit_linear_mpi`);
- neural committees (:func:`train_neural_mpi`), two ways:

  * ``split="members"``: the ``M`` members are split into contiguous blocks, one per rank,
    each rank trains its block (a member's result depends only on the seed and its index, see
    :func:`potlearn_ase.training.trainer.train_neural`) and the weights are gathered. The
    result is the serial one to the last bit, but every rank repeats the work shared by the
    members (the descriptor of every structure and its contraction with the members' feature
    gradients), so two ranks are well short of twice as fast;
  * ``split="structures"`` (data parallel): every rank holds all members and computes the
    descriptor outputs and loss gradients of its share of each batch; the gradients are
    gathered and added in a fixed shard order every optimiser step
    (:mod:`potlearn_ase.training.batches`). This splits all the work. The result equals a
    serial run with the same number of shards exactly, and a default serial run (one shard)
    to rounding: the sums over a batch are split in two, and training carries the last-bit
    differences on (measured in ``tests/training/test_data_parallel.py``).

Linear fits give the serial result for equal seeds, up to floating-point summation order.
Reference calculations go to MPI worker processes through :func:`mpi_executor`.

``mpi4py`` is imported only when the process was started by an MPI launcher (or a
communicator is passed in): a serial run never loads MPI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig, design_rows
from potlearn_ase.models.neural import NeuralCommittee
from potlearn_ase.models.posterior import NormalEquations
from potlearn_ase.training.trainer import NeuralTrainConfig, TrainingHistory, train_neural

if TYPE_CHECKING:
    from mpi4py.futures import MPIPoolExecutor

__all__ = [
    "broadcast",
    "fit_linear_mpi",
    "launched_by_mpi",
    "member_blocks",
    "mpi_executor",
    "reduce_normal_equations",
    "train_neural_mpi",
    "world",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: environment variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's PMI)
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """True when this process was started by ``mpiexec``/``mpirun`` (checked without MPI)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def world() -> Any | None:
    """``MPI.COMM_WORLD`` when launched by an MPI launcher, else None (mpi4py not imported).

    Raises
    ------
    ConfigError
        Launched by ``mpiexec`` but mpi4py is missing (install the ``mpi`` extra).
    """
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(
            "started by an MPI launcher but mpi4py is not importable; install "
            f"potlearn-ase[mpi] ({exc})"
        ) from None
    return MPI.COMM_WORLD


def broadcast(obj: T | None, comm: Any | None, root: int = 0) -> T:
    """``obj`` from ``root`` on every rank (pickled once); ``obj`` itself without ``comm``."""
    if comm is None or comm.Get_size() == 1:
        assert obj is not None
        return obj
    return comm.bcast(obj, root=root)


def _share(n: int, rank: int, size: int, chunk: int) -> list[tuple[int, int]]:
    """Chunks ``[start, stop)`` of ``chunk`` structures dealt round-robin; rank's own."""
    starts = list(range(0, n, chunk))
    return [(s, min(n, s + chunk)) for k, s in enumerate(starts) if k % size == rank]


def member_blocks(n_members: int, size: int) -> list[list[int]]:
    """Contiguous, balanced blocks of member indices, one per rank (some may be empty)."""
    return [b.tolist() for b in np.array_split(np.arange(n_members), size)]


def reduce_normal_equations(ne: NormalEquations, comm: Any | None) -> NormalEquations:
    """Sum the accumulators of all ranks (``Allreduce``); every rank gets the total."""
    if comm is None or comm.Get_size() == 1:
        return ne
    from mpi4py import MPI

    out = NormalEquations(ne.n_params)
    comm.Allreduce(np.ascontiguousarray(ne.AtA), out.AtA, op=MPI.SUM)
    comm.Allreduce(np.ascontiguousarray(ne.Aty), out.Aty, op=MPI.SUM)
    scalars = np.array([ne.yty, float(ne.n_rows)])
    total = np.zeros(2)
    comm.Allreduce(scalars, total, op=MPI.SUM)
    out.yty = float(total[0])
    out.n_rows = int(round(total[1]))
    return out


def _pack(ne: NormalEquations) -> np.ndarray:
    return np.concatenate([ne.AtA.ravel(), ne.Aty, [ne.yty, float(ne.n_rows)]])


def _unpack(vec: np.ndarray, n_params: int) -> NormalEquations:
    ne = NormalEquations(n_params)
    P2 = n_params * n_params
    ne.AtA = vec[:P2].reshape(n_params, n_params).copy()
    ne.Aty = vec[P2 : P2 + n_params].copy()
    ne.yty = float(vec[-2])
    ne.n_rows = int(round(vec[-1]))
    return ne


def _bar(items: Any, show: bool, desc: str) -> Any:
    """``items``, wrapped in a tqdm progress bar (stderr) when ``show``."""
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")


def _ordered_reduce(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    comm: Any,
    progress: bool = False,
) -> NormalEquations:
    """Chunks dealt round-robin; rank 0 adds them in chunk order (the serial order)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    S, K = len(descriptor.elements), descriptor.n_features
    P = S * (K + 1)
    starts = list(range(0, len(frames), config.batch_size))
    total = NormalEquations(P)
    length = P * P + P + 2
    recv = np.empty((size, length)) if rank == 0 else None
    for first in _bar(range(0, len(starts), size), progress and rank == 0, "accumulating"):
        c = first + rank
        if c < len(starts):
            ne = NormalEquations(P)
            A, y, w = design_rows(
                descriptor, list(frames[starts[c] : starts[c] + config.batch_size]), config,
                first_index=starts[c],
            )
            ne.add(A, y, w)
            vec = _pack(ne)
        else:
            vec = np.zeros(length)
        comm.Gather(vec, recv, root=0)
        if rank == 0:
            assert recv is not None
            for r in range(min(size, len(starts) - first)):
                total.merge(_unpack(recv[r], P))
    buf = _pack(total)
    comm.Bcast(buf, root=0)
    return _unpack(buf, P)


def fit_linear_mpi(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    comm: Any | None = None,
    ordered: bool = True,
    progress: bool = False,
) -> LinearCommittee:
    """:func:`potlearn_ase.models.fit_linear` with the accumulation spread over ranks.

    Chunks of ``config.batch_size`` structures are dealt round-robin to the ranks; each rank
    builds the normal equations of its chunks.

    Parameters
    ----------
    descriptor : Descriptor
        The same descriptor on every rank.
    frames : sequence of ase.Atoms
        The same labelled structures on every rank (see :func:`broadcast`).
    config : LinearFitConfig
        Fit settings; ``batch_size`` structures make one unit of work.
    rng : numpy Generator or seed
        Draws the members on rank 0.
    comm : mpi4py communicator, optional
        Default :func:`world`; without MPI this is the serial fit.
    ordered : bool
        True: rank 0 gathers every chunk's accumulator and adds them in chunk order, the
        order of the serial fit, so the result is the serial one to the last bit (given the
        same BLAS threads); the traffic is one ``n_params^2`` matrix per chunk. False: each
        rank sums its own chunks and one ``Allreduce`` adds the ranks' sums (least traffic;
        the summation order differs from the serial fit, which the ill-conditioned solve can
        amplify to ~1e-7 relative in poorly determined coefficients). A fit that infers
        its noise levels (no weight given) always sums per rank.
    progress : bool
        A progress bar (stderr) of the accumulation, on rank 0.

    Returns
    -------
    LinearCommittee
        The same model on every rank, holding the summed normal equations.
    """
    config = config or LinearFitConfig()
    comm = world() if comm is None else comm
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    S, K = len(descriptor.elements), descriptor.n_features
    noise = None
    if not config.infers_noise:
        config = config.fixed()
    if config.infers_noise:  # per-label-type sums, added over the ranks, then the noise levels
        from potlearn_ase.models.noise import LabelBlocks, accumulate_blocks, resolve_noise

        blocks = LabelBlocks.empty(S * (K + 1))
        shares = list(_share(len(frames), rank, size, config.batch_size))
        for start, stop in _bar(shares, progress and rank == 0, "accumulating"):
            accumulate_blocks(
                descriptor, list(frames[start:stop]), config, first_index=start, blocks=blocks
            )
        blocks.parts = [reduce_normal_equations(ne, comm) for ne in blocks.parts]
        if comm is not None and size > 1:
            blocks.structures = np.asarray(comm.allreduce(blocks.structures))
        config, ne, noise = resolve_noise(blocks, S, config)
    elif comm is not None and size > 1 and ordered:
        ne = _ordered_reduce(descriptor, frames, config, comm, progress)
    else:
        ne = NormalEquations(S * (K + 1))
        shares = list(_share(len(frames), rank, size, config.batch_size))
        for start, stop in _bar(shares, progress and rank == 0, "accumulating"):
            A, y, w = design_rows(descriptor, list(frames[start:stop]), config, first_index=start)
            ne.add(A, y, w)
        ne = reduce_normal_equations(ne, comm)
    model = LinearCommittee(
        descriptor,
        torch.zeros(config.n_members, S, K + 1, dtype=descriptor.dtype),
        normal_equations=ne,
        config=config,
    )
    model.noise = noise
    if rank == 0:
        model.draw_members(np.random.default_rng(rng))
        solved: tuple[Any, Any] | None = (model.coef.cpu().numpy(), model.posterior)
    else:
        solved = None
    if comm is not None and size > 1:
        coef, posterior = comm.bcast(solved, root=0)
        if rank != 0:
            model.coef = torch.as_tensor(coef, dtype=model.coef.dtype, device=model.coef.device)
            model.posterior = posterior
    return model


def train_neural_mpi(
    descriptor: Descriptor,
    train: Sequence[Atoms],
    val: Sequence[Atoms] | None = None,
    config: NeuralTrainConfig | None = None,
    *,
    init: NeuralCommittee | None = None,
    comm: Any | None = None,
    split: str = "members",
    shards: int | None = None,
    progress: bool = False,
) -> tuple[NeuralCommittee, list[TrainingHistory]]:
    """:func:`potlearn_ase.training.trainer.train_neural` spread over MPI ranks.

    Parameters
    ----------
    descriptor, train, val, config, init
        As for :func:`~potlearn_ase.training.trainer.train_neural`, identical on every rank.
    comm : mpi4py communicator, optional
        Default :func:`world`; without MPI this is the serial training (with ``shards``
        shards for ``split="structures"``).
    split : {"members", "structures"}
        ``"members"``: rank ``r`` trains the ``r``-th block of :func:`member_blocks`, the
        weights are gathered and joined in member order; identical to the serial run.
        ``"structures"``: data parallel, every batch is cut into ``shards`` shards dealt to
        the ranks and the gradients are added in shard order; identical to a serial run with
        ``train_neural(..., shards=shards)``, equal to a one-shard serial run to rounding,
        and faster (it splits the descriptor work too).
    shards : int, optional
        Shards per batch for ``split="structures"``; default the number of ranks.
    progress : bool
        A progress bar (stderr) of the epochs, on rank 0.

    Returns
    -------
    model : NeuralCommittee
        All members, on every rank.
    histories : list of TrainingHistory
        ``"members"``: one per rank, in rank order; ``"structures"``: the one history every
        rank shares.

    Raises
    ------
    ConfigError
        An unknown ``split``.
    """
    if split not in ("members", "structures"):
        raise ConfigError(f"split must be 'members' or 'structures', got {split!r}")
    cfg = config or NeuralTrainConfig()
    comm = world() if comm is None else comm
    size = comm.Get_size() if comm is not None else 1
    if split == "structures":
        n_shards = size if shards is None else int(shards)
        show = progress and (comm is None or comm.Get_rank() == 0)
        model, hist = train_neural(
            descriptor, train, val, cfg, init=init, shards=n_shards, comm=comm, progress=show
        )
        return model, [hist]
    if comm is None or size == 1:
        model, hist = train_neural(descriptor, train, val, cfg, init=init, progress=progress)
        return model, [hist]
    rank = comm.Get_rank()
    total = init.members if init is not None else tuple(range(cfg.n_members))
    blocks = [[total[i] for i in b] for b in member_blocks(len(total), size)]
    log.info("rank %d of %d trains members %s", rank, size, blocks[rank])
    part, hist = train_neural(
        descriptor, train, val, cfg, init=init, members=blocks[rank],
        progress=progress and rank == 0,
    )
    state = {k: v.detach().cpu() for k, v in part.state_dict().items()}
    gathered = comm.allgather((list(part.members), state, hist))
    parts = []
    for members, st, _ in gathered:
        if not members:
            continue
        p = NeuralCommittee(
            part.descriptor,
            hidden=part.hidden,
            activation=part.activation,
            seed=part.seed,
            members=members,
        )
        p.load_state_dict(st)
        parts.append(p.to(part.feature_mean.device))
    model = NeuralCommittee.join(parts)
    model.eval()
    return model, [h for _, _, h in gathered]


def mpi_executor(max_workers: int | None = None, **kwargs: Any) -> MPIPoolExecutor:
    """An ``mpi4py.futures.MPIPoolExecutor`` for reference calls on other MPI processes.

    Use it as a context manager and hand it to
    :meth:`potlearn_ase.learners.reference.Reference.label_many`::

        with mpi_executor() as pool:
            results = reference.label_many(frames, executor=pool)

    Start the script with ``mpiexec -n R python -m mpi4py.futures script.py``: rank 0 runs
    the script and the other ``R - 1`` ranks serve the calls (without a launcher, mpi4py
    spawns ``max_workers`` workers if the MPI library allows it). The Reference must be
    picklable (e.g. made by ``Reference.from_spec``).

    Parameters
    ----------
    max_workers : int, optional
        Number of workers to spawn when none were started by the launcher.
    **kwargs
        Passed to ``MPIPoolExecutor``.

    Raises
    ------
    ConfigError
        mpi4py is not installed.
    """
    try:
        from mpi4py.futures import MPIPoolExecutor
    except ImportError as exc:
        raise ConfigError(f"mpi_executor needs mpi4py (potlearn-ase[mpi]): {exc}") from None
    return MPIPoolExecutor(max_workers=max_workers, **kwargs)
