"""Descriptors: ACE-like (torch) and SNAP (LAMMPS), behind one interface."""

from __future__ import annotations

from typing import Any

from potlearn_ase.descriptors.ace import ACEConfig, ACEDescriptor
from potlearn_ase.descriptors.ace_full import FullACEConfig, FullACEDescriptor
from potlearn_ase.descriptors.base import Descriptor, DescriptorOutput, species_indices
from potlearn_ase.descriptors.neighbours import neighbour_pairs, padded_neighbours
from potlearn_ase.errors import ModelFormatError

__all__ = [
    "ACEConfig",
    "ACEDescriptor",
    "Descriptor",
    "DescriptorOutput",
    "FullACEConfig",
    "FullACEDescriptor",
    "descriptor_from_dict",
    "neighbour_pairs",
    "padded_neighbours",
    "species_indices",
]


def descriptor_from_dict(d: dict[str, Any], **kwargs: Any) -> Descriptor:
    """Rebuild a descriptor from its ``todict()``; the ``family`` key picks the class."""
    family = d.get("family")
    if family == "ace":
        if "correlation_order" in d:  # the many-body basis; files without it: power spectrum
            from potlearn_ase.descriptors.ace_full import FullACEDescriptor

            return FullACEDescriptor.fromdict(d, **kwargs)
        return ACEDescriptor.fromdict(d, **kwargs)
    if family == "snap":
        from potlearn_ase.descriptors.snap import SNAPDescriptor

        return SNAPDescriptor.fromdict(d)
    raise ModelFormatError(f"unknown descriptor family {family!r} (key 'descriptor.family')")
