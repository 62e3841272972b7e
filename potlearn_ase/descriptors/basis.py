"""Radial and angular basis functions with their derivatives, in torch.

Radial: spherical Bessel-like functions ``sin(n pi r / rc) / r`` times a C2 smooth cutoff.
Angular: real spherical harmonics up to ``l = 3`` written as homogeneous polynomials of the unit
vector, normalised so that ``sum_m Y_lm(u)^2 = 1``. Each function returns its value and its
derivative in closed form; the autograd path of the descriptor uses the values only.
"""

from __future__ import annotations

import math

import torch

__all__ = ["bessel_radial", "n_harmonics", "real_harmonics", "harmonic_degrees"]

_S3 = math.sqrt(3.0)
_S15 = math.sqrt(15.0)
_S10_4 = math.sqrt(10.0) / 4.0
_S6_4 = math.sqrt(6.0) / 4.0


def n_harmonics(l_max: int) -> int:
    """Number of real harmonics ``(l_max + 1)^2``."""
    return (l_max + 1) ** 2


def harmonic_degrees(l_max: int) -> list[int]:
    """Degree ``l`` of each harmonic in the order :func:`real_harmonics` returns them."""
    return [l for l in range(l_max + 1) for _ in range(2 * l + 1)]


def bessel_radial(
    r: torch.Tensor, cutoff: float, n_radial: int, *, derivative: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Radial basis ``R_n(r)``, ``n = 1..n_radial``, smooth to second order at the cutoff.

    Parameters
    ----------
    r : torch.Tensor
        Distances (any shape), Angstrom; must be positive.
    cutoff : float
        Cutoff radius (Angstrom); every function and its first two derivatives vanish there.
    n_radial : int
        Number of functions.
    derivative : bool
        Also return ``dR_n/dr``.

    Returns
    -------
    R : torch.Tensor
        ``r.shape + (n_radial,)``.
    dR : torch.Tensor or None
        Same shape, or None when not asked.
    """
    n = torch.arange(1, n_radial + 1, dtype=r.dtype, device=r.device)
    k = n * (math.pi / cutoff)
    x = (r / cutoff).clamp(max=1.0)
    x2 = x * x
    x3 = x2 * x
    fc = 1.0 - x3 * (10.0 - 15.0 * x + 6.0 * x2)
    rr = r[..., None]
    kr = k * rr
    s = torch.sin(kr)
    norm = math.sqrt(2.0 / cutoff)
    g = norm * s / rr
    R = g * fc[..., None]
    if not derivative:
        return R, None
    dfc = -30.0 * x2 * (1.0 - x) ** 2 / cutoff
    dg = norm * (k * torch.cos(kr) * rr - s) / (rr * rr)
    dR = dg * fc[..., None] + g * dfc[..., None]
    return R, dR


def real_harmonics(
    u: torch.Tensor, l_max: int, *, derivative: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real spherical harmonics of unit vectors, as homogeneous polynomials.

    Parameters
    ----------
    u : torch.Tensor
        ``(..., 3)`` unit vectors.
    l_max : int
        Highest degree, 0 to 3.
    derivative : bool
        Also return the gradient of each polynomial with respect to its argument, evaluated at
        ``u`` (for a homogeneous polynomial of degree ``l``, ``u . grad Y = l Y``).

    Returns
    -------
    Y : torch.Tensor
        ``(..., (l_max + 1)^2)``.
    dY : torch.Tensor or None
        ``(..., 3, (l_max + 1)^2)``: ``dY[..., c, lm] = dY_lm/du_c``.
    """
    if not 0 <= l_max <= 3:
        raise ValueError(f"l_max must be 0 to 3, got {l_max}")
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    one = torch.ones_like(x)
    zero = torch.zeros_like(x)
    Y = [one]
    dY = [(zero, zero, zero)]
    if l_max >= 1:
        Y += [x, y, z]
        dY += [(one, zero, zero), (zero, one, zero), (zero, zero, one)]
    if l_max >= 2:
        xx, yy, zz = x * x, y * y, z * z
        Y += [
            _S3 * x * y,
            _S3 * y * z,
            0.5 * (2.0 * zz - xx - yy),
            _S3 * x * z,
            0.5 * _S3 * (xx - yy),
        ]
        dY += [
            (_S3 * y, _S3 * x, zero),
            (zero, _S3 * z, _S3 * y),
            (-x, -y, 2.0 * z),
            (_S3 * z, zero, _S3 * x),
            (_S3 * x, -_S3 * y, zero),
        ]
    if l_max >= 3:
        xx, yy, zz = x * x, y * y, z * z
        Y += [
            _S10_4 * y * (3.0 * xx - yy),
            _S15 * x * y * z,
            _S6_4 * y * (4.0 * zz - xx - yy),
            0.5 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _S6_4 * x * (4.0 * zz - xx - yy),
            0.5 * _S15 * z * (xx - yy),
            _S10_4 * x * (xx - 3.0 * yy),
        ]
        dY += [
            (_S10_4 * 6.0 * x * y, _S10_4 * 3.0 * (xx - yy), zero),
            (_S15 * y * z, _S15 * x * z, _S15 * x * y),
            (-2.0 * _S6_4 * x * y, _S6_4 * (4.0 * zz - xx - 3.0 * yy), 8.0 * _S6_4 * y * z),
            (-3.0 * x * z, -3.0 * y * z, 3.0 * zz - 1.5 * xx - 1.5 * yy),
            (_S6_4 * (4.0 * zz - 3.0 * xx - yy), -2.0 * _S6_4 * x * y, 8.0 * _S6_4 * x * z),
            (_S15 * x * z, -_S15 * y * z, 0.5 * _S15 * (xx - yy)),
            (_S10_4 * 3.0 * (xx - yy), -6.0 * _S10_4 * x * y, zero),
        ]
    Yt = torch.stack(Y, dim=-1)
    if not derivative:
        return Yt, None
    dYt = torch.stack([torch.stack([g[c] for g in dY], dim=-1) for c in range(3)], dim=-2)
    return Yt, dYt
