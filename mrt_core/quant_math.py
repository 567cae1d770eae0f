"""The integer contract of DESIGN.md as small pure functions (numpy, float64 where exactness matters)."""

from __future__ import annotations

import math

import numpy as np

MAX_BIT = 32


def bit_length(n) -> int:
    """Bits of a non-negative integer: 127 -> 7, 128 -> 8 (Python's int.bit_length)."""
    return int(abs(int(n))).bit_length()


def precision_of(max_abs) -> int:
    """Signed bits needed for integers in [-max_abs, max_abs]: 127 -> 8, 128 -> 9, 0 -> 1."""
    return bit_length(int(round(float(max_abs)))) + 1


def int_range(precision: int) -> int:
    """Largest magnitude of a signed `precision`-bit quantity: 2^(p-1) - 1."""
    return (1 << (precision - 1)) - 1


def symmetric_scale(absmax, precision: int):
    """scale = (2^(p-1)-1) / absmax, with scale 1 where absmax is 0 (the tensor is all zeros)."""
    absmax = np.asarray(absmax, dtype=np.float64)
    safe = np.where(absmax > 0, absmax, 1.0)
    scale = np.where(absmax > 0, int_range(precision) / safe, 1.0)
    return float(scale) if scale.ndim == 0 else scale


def affine_scale(lo, hi, precision: int):
    """scale = (2^p-1) / (max-min), 1 where the range is empty."""
    span = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    safe = np.where(span > 0, span, 1.0)
    scale = np.where(span > 0, ((1 << precision) - 1) / safe, 1.0)
    return float(scale) if scale.ndim == 0 else scale


def round_half_away(x):
    """Round to nearest, halves away from zero (numpy's rint rounds halves to even):
    trunc(x + copysign(0.5, x)), which is sign(x) * floor(|x| + 0.5) in every bit, in fewer passes."""
    x = np.array(x, dtype=np.float64)
    x += np.copysign(0.5, x)
    return np.trunc(x, out=x) if x.ndim else np.trunc(x)


def quantize_symmetric(x, scale, precision: int) -> np.ndarray:
    bound = int_range(precision)
    return np.clip(round_half_away(np.asarray(x, dtype=np.float64) * scale), -bound, bound)


def cvm_float(ratio: float, bit_budget: int) -> tuple[int, int]:
    """Write a positive ratio as frac * 2^exp with 1 <= frac <= 2^bit_budget - 1, frac as large as the
    budget allows (then stripped of trailing zero bits, which change nothing)."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"scale ratio must be positive and finite, got {ratio}")
    if bit_budget < 1:
        raise ValueError(f"no bits left for the multiplier (budget {bit_budget})")
    mantissa, e = math.frexp(ratio)  # ratio = mantissa * 2^e, 0.5 <= mantissa < 1
    exp = e - bit_budget
    frac = int(round_half_away(ratio / 2.0 ** exp))
    if frac >= (1 << bit_budget):  # rounding carried into a new bit
        frac, exp = frac >> 1, exp + 1
    while frac > 1 and frac % 2 == 0:
        frac, exp = frac >> 1, exp + 1
    return frac, exp


def right_shift_round(x, shift: int, precision: int) -> np.ndarray:
    """Rounding right shift of integers (half up): floor((floor(x / 2^(s-1)) + 1) / 2), then clip.
    shift 0 only clips."""
    x = np.asarray(x, dtype=np.float64)
    if shift > 0:
        x = np.floor((np.floor(x / 2.0 ** (shift - 1)) + 1) / 2)
    bound = int_range(precision)
    return np.clip(x, -bound, bound)


def left_shift(x, shift: int, precision: int) -> np.ndarray:
    bound = int_range(precision)
    return np.clip(np.asarray(x, dtype=np.float64) * 2.0 ** shift, -bound, bound)


def conv_precision(k: int, x_precision: int, w_precision: int) -> int:
    """Output bits of a sum of k products: bits(k) + px + pw."""
    return bit_length(k) + x_precision + w_precision
