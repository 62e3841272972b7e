"""Data layer: datasets of labelled ``ase.Atoms``, file IO, validation, splits, normalisation,
torch batches and the label store."""

from .batch import AtomsBatch, BatchIterator, collate, resolve_device
from .dataset import Dataset, copy_labelled
from .io import read, write
from .normalise import Normaliser
from .split import composition_matrix, fit_reference_energies, train_val_test_split
from .store import LabelStore
from .validate import check_structure, get_labels, require_labels

__all__ = [
    "AtomsBatch",
    "BatchIterator",
    "Dataset",
    "LabelStore",
    "Normaliser",
    "check_structure",
    "collate",
    "composition_matrix",
    "copy_labelled",
    "fit_reference_energies",
    "get_labels",
    "read",
    "require_labels",
    "resolve_device",
    "train_val_test_split",
    "write",
]
