"""Radial and angular basis functions with their derivatives, in torch.

Radial: spherical Bessel-like functions ``sin(n pi r / rc) / r`` times a C2 smooth cutoff.
Angular: real spherical harmonics written as homogeneous polynomials of the unit vector (explicit
up to ``l = 3``, by the associated-Legendre recursion beyond), normalised so that
``sum_m Y_lm(u)^2 = 1``. Each function returns its value and its
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
    u: torch.Tensor, l_max: int, *, derivative: bool = False, recursive: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real spherical harmonics of unit vectors, as homogeneous polynomials.

    Degree ``l`` occupies columns ``l^2 .. (l+1)^2 - 1`` in the order ``m = -l..l`` (sine-like
    for negative ``m``), except ``l = 1``, which is ``(x, y, z)``.

    Parameters
    ----------
    u : torch.Tensor
        ``(..., 3)`` unit vectors.
    l_max : int
        Highest degree (any ``l_max >= 0``).
    recursive : bool, optional
        Use the associated-Legendre recursion (default: only when ``l_max > 3``; the explicit
        polynomials up to ``l = 3`` give the same values).
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
    if l_max < 0:
        raise ValueError(f"l_max must be at least 0, got {l_max}")
    if recursive or (recursive is None and l_max > 3):
        return _recursive_harmonics(u, l_max, derivative)
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


def _recursive_harmonics(
    u: torch.Tensor, l_max: int, derivative: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`real_harmonics` of any degree, from ``Q_l^m(z) Re/Im (x + i y)^m``.

    ``Q_l^m = P_l^m / (1 - z^2)^{m/2}`` follows the associated-Legendre recursion; the factor
    ``sqrt(2 (l-m)! / (l+m)!)`` gives ``sum_m Y_lm^2 = 1``. The gradient returned is that of the
    homogeneous polynomial: the tangential gradient plus ``l Y u``.
    """
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    one = torch.ones_like(x)
    zero = torch.zeros_like(x)
    C, S = [one], [zero]  # Re, Im of (x + i y)^m
    for m in range(1, l_max + 1):
        C.append(x * C[m - 1] - y * S[m - 1])
        S.append(x * S[m - 1] + y * C[m - 1])
    Q: dict[tuple[int, int], torch.Tensor] = {}
    dQ: dict[tuple[int, int], torch.Tensor] = {}
    for m in range(l_max + 1):
        Q[m, m] = one * float(math.prod(range(1, 2 * m, 2)))
        dQ[m, m] = zero
        if m + 1 <= l_max:
            Q[m + 1, m] = (2 * m + 1) * z * Q[m, m]
            dQ[m + 1, m] = (2 * m + 1) * Q[m, m]
        for l in range(m + 2, l_max + 1):
            Q[l, m] = ((2 * l - 1) * z * Q[l - 1, m] - (l + m - 1) * Q[l - 2, m]) / (l - m)
            dQ[l, m] = (
                (2 * l - 1) * (Q[l - 1, m] + z * dQ[l - 1, m]) - (l + m - 1) * dQ[l - 2, m]
            ) / (l - m)
    Y, grads, degree = [], [], []
    for l in range(l_max + 1):
        order = [1, -1, 0] if l == 1 else range(-l, l + 1)
        for m in order:
            a = abs(m)
            norm = 1.0 if m == 0 else math.sqrt(2.0 * math.factorial(l - a) / math.factorial(l + a))
            trig = C[a] if m >= 0 else S[a]
            Y.append(norm * Q[l, a] * trig)
            degree.append(l)
            if derivative:
                if a == 0:
                    gx = gy = zero
                elif m > 0:  # d/dx C_a = a C_{a-1}, d/dy C_a = -a S_{a-1}
                    gx, gy = a * C[a - 1], -a * S[a - 1]
                else:  # d/dx S_a = a S_{a-1}, d/dy S_a = a C_{a-1}
                    gx, gy = a * S[a - 1], a * C[a - 1]
                grads.append(
                    torch.stack([norm * Q[l, a] * gx, norm * Q[l, a] * gy, norm * dQ[l, a] * trig],
                                dim=-1)
                )
    Yt = torch.stack(Y, dim=-1)
    if not derivative:
        return Yt, None
    g = torch.stack(grads, dim=-1)  # (..., 3, L)
    radial = (u[..., :, None] * g).sum(-2, keepdim=True)
    lvec = torch.tensor(degree, dtype=u.dtype, device=u.device)
    return Yt, g - u[..., :, None] * radial + lvec * u[..., :, None] * Yt[..., None, :]
