"""LAMMPS: drive a deck with any ASE calculator through ``fix external`` (:mod:`.driver`), learn
on the fly inside it (:mod:`.learning`), export a linear SNAP model to ``pair_style snap``
(:mod:`.snap_export`) and run it natively (:mod:`.native`). :mod:`.library` loads the LAMMPS
library with its MPI and converts structures.

Nothing here imports LAMMPS until a function needs it.
"""
