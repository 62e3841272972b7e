"""Engine adapters of the on-the-fly learner (i-PI; LAMMPS lives in calculators.lammps_driver)."""
