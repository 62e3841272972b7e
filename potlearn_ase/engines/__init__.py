"""MD engines that run a committee and, optionally, an on-the-fly learner.

Each engine has a folder: :mod:`potlearn_ase.engines.lammps` (a LAMMPS deck driven through
``fix external``, native SNAP export) and :mod:`potlearn_ase.engines.ipi` (the i-PI socket
driver). Each folder holds the engine's driver, its helpers and the adapter through which the
on-the-fly learner watches it (``learning.py``); :mod:`potlearn_ase.engines.learning` is what
every engine's ``--learn`` configuration shares. ASE's own dynamics need no adapter: the
learner attaches to them directly (:mod:`potlearn_ase.learners.otf`).
"""
