"""The programme in HiGHS's terms (``Model``), where each quantity sits in it (``Columns``), and
the ``Builder`` that appends columns and rows in blocks of numpy arrays (``gateway/plan/build.py``
fills it; ``gateway/plan/solve.py`` hands it to HiGHS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Columns:
    """Where each quantity sits in the solution vector (indices per step; -1: absent)."""

    pv: IntArray
    grid_import: IntArray
    grid_export: IntArray
    market: IntArray
    charge: IntArray
    discharge: IntArray
    soc: IntArray
    below_reserve: IntArray
    above_top: IntArray
    ev_charge: IntArray
    ev_discharge: IntArray
    ev_soc: IntArray
    ev_below_floor: IntArray
    over_import: IntArray
    jobs: dict[str, IntArray]
    shortfall: dict[str, int]
    """Per job and the vehicle: the column of the energy its deadline misses."""


@dataclass(frozen=True, slots=True)
class Model:
    """The programme in HiGHS's terms: minimise ``cost·x`` with ``lower <= x <= upper`` and
    ``row_lower <= A x <= row_upper``; ``A`` row-wise (CSR)."""

    cost: FloatArray
    lower: FloatArray
    upper: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    starts: IntArray
    index: IntArray
    value: FloatArray
    balance_rows: IntArray
    columns: Columns
    fixed_shortfall: dict[str, float]
    """Energy a deadline already missed before the horizon starts (due now): no column for it."""

    @property
    def num_col(self) -> int:
        return len(self.cost)

    @property
    def num_row(self) -> int:
        return len(self.row_lower)


class Builder:
    """Columns and row-wise coefficients, appended in blocks of numpy arrays."""

    def __init__(self) -> None:
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.cost: list[FloatArray] = []
        self.row_lower: list[FloatArray] = []
        self.row_upper: list[FloatArray] = []
        self.entries: list[tuple[IntArray, IntArray, FloatArray]] = []
        self.n_col = 0
        self.n_row = 0

    def cols(self, n: int, *, lower: float | FloatArray = 0.0,
             upper: float | FloatArray = np.inf, cost: float | FloatArray = 0.0) -> IntArray:
        idx = np.arange(self.n_col, self.n_col + n, dtype=np.int64)
        for store, value in ((self.lower, lower), (self.upper, upper), (self.cost, cost)):
            store.append(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy())
        self.n_col += n
        return idx

    def rows(self, n: int, *, lower: float | FloatArray = -np.inf,
             upper: float | FloatArray = np.inf) -> IntArray:
        idx = np.arange(self.n_row, self.n_row + n, dtype=np.int64)
        for store, value in ((self.row_lower, lower), (self.row_upper, upper)):
            store.append(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy())
        self.n_row += n
        return idx

    def coef(self, rows: IntArray, cols: IntArray, value: float | FloatArray) -> None:
        """``A[rows[i], cols[i]] += value[i]``; entries whose column is absent (-1) are skipped."""
        rows, cols = np.broadcast_arrays(rows, cols)
        vals = np.broadcast_to(np.asarray(value, dtype=np.float64), rows.shape)
        keep = cols >= 0
        self.entries.append((rows[keep], cols[keep], vals[keep]))

    def csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        rows = np.concatenate([r for r, _, _ in self.entries])
        cols = np.concatenate([c for _, c, _ in self.entries])
        vals = np.concatenate([v for _, _, v in self.entries])
        order = np.lexsort((cols, rows))
        starts = np.searchsorted(rows[order], np.arange(self.n_row + 1)).astype(np.int64)
        return starts, cols[order], vals[order]
