"""Rounding exactly as DuckDB's round(x, ROUND_DIGITS), in numpy (the kernel's sums and
averages; docs/compute.md, exact semantics)."""

from __future__ import annotations

from typing import Any

import numpy as np
from tally.catalog.compute.plans import ROUND_DIGITS


def _product_error(a: np.ndarray, b: float) -> np.ndarray:
    """The exact rounding error of a * b (Dekker's two-product, no FMA needed)."""
    split = 134217729.0  # 2**27 + 1

    def halves(x: np.ndarray | float) -> tuple[Any, Any]:
        c = split * x
        high = c - (c - x)
        return high, x - high

    a_hi, a_lo = halves(a)
    b_hi, b_lo = halves(b)
    product = a * b
    error: np.ndarray = ((a_hi * b_hi - product) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return error


def round_like_duckdb(values: np.ndarray) -> np.ndarray:
    """round(x, ROUND_DIGITS) exactly as DuckDB gives it: x * 10^d rounded to the nearest
    whole number as if computed exactly (halves away from zero), then / 10^d; the input
    itself where that is not finite. Where the rounded product lands on a half, the sign of
    its exact error decides. One comparison finds both rare cases: the distance to the
    nearest whole number is 0.5 on a half and NaN where the product is not finite."""
    modifier = 10.0 ** ROUND_DIGITS
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * modifier
        whole = np.rint(scaled)  # halves to even: the only place it differs from DuckDB
        np.subtract(scaled, whole, out=scaled)
        np.abs(scaled, out=scaled)  # now the distance, <= 0.5, or NaN
        ordinary = scaled < 0.5
        special = np.flatnonzero(~ordinary) if not ordinary.all() else None
        if special is not None:
            half = special[scaled[special] == 0.5]
            product = values[half] * modifier
            sign = np.sign(product)
            error = _product_error(values[half], modifier) * sign
            whole[half] = np.trunc(product) + sign * (error >= 0)  # on or above it: away
        whole /= modifier
    if special is not None:
        bad = special[np.isnan(scaled[special])]
        whole[bad] = values[bad]
    return whole
