"""Engine adapters of the on-the-fly learner: i-PI (``ipi``) and LAMMPS (``lammps``)."""
