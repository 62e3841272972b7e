"""i-PI socket speed: wall time per MD step with our client serving a committee model.

``ipi_rows(model_path, atoms, steps)`` starts ``i-pi`` (classical NVT, one bead, a unix
socket in a temporary directory), serves it from this process and returns one row per
variant:

* ``committee extras``: energy, forces, virial and the committee as JSON extras (the default);
* ``no extras``: energy, forces and virial only;
* ``ffcommittee``: the extras parsed by i-PI's ``<ffcommittee parse_json>`` (what the example
  input uses).

Each row gives the time per step seen by the client (first request to last reply, over
``steps`` steps after one warm-up step), the time spent in the model, and the difference: the
socket round trip plus i-PI's own work per step.

Usage: ``python benchmarks/engines_ipi.py [model.pt] [--steps N]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ase import Atoms

_INPUT = """<simulation verbosity="quiet" {prefix}>
  <output prefix="bench">
    <properties stride="{steps}" filename="out">[ step, potential ]</properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads="1">
      <file mode="ase">start.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="{ff_name}"/></forces>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">2.0</timestep>
        <thermostat mode="langevin"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""

_SOCKET = '<ffsocket name="potlearn" mode="unix" pbc="true"><address>{address}</address></ffsocket>'


def _run_one(model_path: str | Path, atoms: Atoms, steps: int, variant: str) -> dict[str, Any]:
    import ase.io

    import potlearn_ase
    from potlearn_ase.engines.ipi.client import IPIClient, launch_ipi

    calc = potlearn_ase.load(model_path)
    with tempfile.TemporaryDirectory(prefix="potlearn-ipi-bench-") as tmp:
        d = Path(tmp)
        ase.io.write(d / "start.extxyz", atoms, format="extxyz")
        if variant == "ffcommittee":
            # i-PI does not pass its sockets_prefix to sockets nested in a committee
            address = f"potlearn-bench-{uuid.uuid4().hex[:8]}"
            prefix_attr, client_prefix = "", "/tmp/ipi_"
            ff = (
                '<ffcommittee name="committee">' + _SOCKET.format(address=address)
                + "<alpha>1.0</alpha><parse_json>true</parse_json></ffcommittee>"
            )
            ff_name = "committee"
        else:
            address = "bench"
            prefix_attr, client_prefix = f'sockets_prefix="{d}/"', f"{d}/"
            ff, ff_name = _SOCKET.format(address=address), "potlearn"
        xml = d / "input.xml"
        xml.write_text(
            _INPUT.format(prefix=prefix_attr, steps=steps, forcefield=ff, ff_name=ff_name)
        )
        t0 = time.perf_counter()
        with launch_ipi(xml, cwd=d) as proc:
            client = IPIClient.from_calculator(
                calc, atoms, unixsocket=address, sockets_prefix=client_prefix, server=proc,
                extras=variant != "no extras", track_requests=False,
            )
            stats = _serve_timed(client)
            proc.wait(timeout=60)
        total = time.perf_counter() - t0
    per = stats["served_seconds"] / stats["steps"]
    model = stats["evaluate_seconds"] / stats["steps"]
    return {
        "engine": "i-pi",
        "variant": variant,
        "atoms": len(atoms),
        "steps": int(stats["steps"]),
        "ms_per_step": 1e3 * per,
        "model_ms_per_step": 1e3 * model,
        "socket_and_ipi_ms_per_step": 1e3 * (per - model),
        "wall_s_including_startup": total,
    }


def _serve_timed(client: Any) -> dict[str, float]:
    """Serve until i-PI exits; time from the second structure on (the first is a warm-up)."""
    stats = client.stats
    marks: list[tuple[float, float]] = []
    evaluate = client.evaluate

    def timed(atoms: Atoms, request_id: int) -> Any:
        marks.append((time.perf_counter(), stats.evaluate_seconds))
        return evaluate(atoms, request_id)

    client.evaluate = timed
    client.run()
    t_first, e_first = marks[1]  # the second request: after the warm-up step
    return {
        "served_seconds": (stats.last_reply or t_first) - t_first,
        "evaluate_seconds": stats.evaluate_seconds - e_first,
        "steps": len(marks) - 1,
    }


def ipi_rows(model_path: str | Path, atoms: Atoms, steps: int) -> list[dict[str, Any]]:
    """Time ``steps`` MD steps of ``atoms`` through the i-PI socket, one row per variant.

    Parameters
    ----------
    model_path : path
        A saved committee (:meth:`CommitteeCalculator.save`).
    atoms : Atoms
        The structure (fully periodic: the virial is sent).
    steps : int
        Steps i-PI runs; the first structure (a warm-up) is not timed.

    Returns
    -------
    list of dict
        ``engine``, ``variant``, ``atoms``, ``steps``, ``ms_per_step``, ``model_ms_per_step``,
        ``socket_and_ipi_ms_per_step``, ``wall_s_including_startup``.
    """
    variants = ("committee extras", "no extras", "ffcommittee")
    return [_run_one(model_path, atoms, steps, v) for v in variants]


def _default_model(path: Path) -> Path:
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    frames = reference_md_frames(600, 6, rng=0)
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))
    model = fit_linear(desc, frames, LinearFitConfig(n_members=8), rng=0)
    CommitteeCalculator(model=model).save(path)
    return path


def main() -> None:
    from ase.build import bulk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="saved committee (default: a small Cu fit)")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _default_model(Path(tmp) / "model.pt")
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.rattle(0.02, seed=0)
        rows = ipi_rows(model, atoms, args.steps)
    for r in rows:
        print(f"{r['variant']:>18s}: {r['ms_per_step']:6.2f} ms/step "
              f"(model {r['model_ms_per_step']:.2f}, socket + i-PI "
              f"{r['socket_and_ipi_ms_per_step']:.2f}) for {r['atoms']} atoms")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
