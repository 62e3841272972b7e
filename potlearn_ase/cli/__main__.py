"""``python -m potlearn_ase.cli``: the ``potlearn`` command."""

from potlearn_ase.cli import main

if __name__ == "__main__":  # not when imported, e.g. by the workers of mpi4py.futures
    raise SystemExit(main())
