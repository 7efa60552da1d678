"""Run a programme (``gateway/plan/model.py``) through HiGHS, within a time limit.

One ``Solver`` holds one HiGHS instance for the life of the gateway: the bid curve re-solves the
day's programme with one bound changed, and HiGHS restarts those from the last basis, at a
fraction of a first solve. It runs single-threaded and silent: the Pi's other cores serve Modbus
and MQTT.

HiGHS compares ``time_limit`` with its instance's *cumulative* run clock, not the current run's
(ERGO-Code/HiGHS#1477), so a long-lived instance would soon stop every solve at once: each run's
limit is set to the clock's reading plus the budget.

HiGHS is imported when the first ``Solver`` is made (about 6 MB resident), so what only reads
the config or drives the devices does not carry it. HiGHS prints its banner on standard output
when an instance is made, before any option can silence it (ERGO-Code/HiGHS#2749): the gateway's
and ``gridpeer sim compare``'s output are not the solver's to write, so the descriptor is pointed
at ``/dev/null`` for that call.

Anything short of an optimal solution raises ``SolveFailed`` with a short reason the planner
counts and logs (``gateway/plan/planner.py``); the solver's own exceptions are caught here so
none reaches the gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from collections.abc import Iterator

import numpy as np

from gateway.plan.model import FloatArray, Model


class SolveFailed(Exception):
    """No optimal solution: ``reason`` is short and stable (``time-limit``, ``status:...``,
    ``solver-error:...``), fit for a counter's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Standard output (the descriptor, so C code's writes too) discarded inside the block:
    Python's and C's buffers are flushed on the way in and out, so nothing written before is
    lost and nothing written inside comes out later."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


class Solver:
    """One HiGHS instance: ``load`` a model, ``run`` it, read values, change a bound, run again."""

    def __init__(self) -> None:
        import highspy

        with _stdout_silenced():
            self._highs = highspy.Highs()  # type: ignore[no-untyped-call]
        # Presolve costs more than it saves on the day's LP (``bench/bench_ems.py``).
        for option, value in (("output_flag", False), ("threads", 1), ("presolve", "off")):
            self._highs.setOptionValue(option, value)
        self._model: Model | None = None

    def load(self, model: Model) -> None:
        """Replace the programme."""
        import highspy

        lp = highspy.HighsLp()
        lp.num_col_ = model.num_col
        lp.num_row_ = model.num_row
        lp.col_cost_ = model.cost
        lp.col_lower_ = model.lower
        lp.col_upper_ = model.upper
        lp.row_lower_ = model.row_lower
        lp.row_upper_ = model.row_upper
        matrix = lp.a_matrix_
        matrix.format_ = highspy.MatrixFormat.kRowwise
        matrix.start_ = model.starts
        matrix.index_ = model.index
        matrix.value_ = model.value
        matrix.num_col_ = model.num_col
        matrix.num_row_ = model.num_row
        self._highs.clearModel()
        if self._highs.passModel(lp) != highspy.HighsStatus.kOk:
            raise SolveFailed("solver-error:model-refused")
        self._model = model

    def run(self, *, time_limit_s: float) -> None:
        """Solve to optimality within ``time_limit_s`` of this run, or raise ``SolveFailed``."""
        import highspy

        if self._model is None:
            raise RuntimeError("no model loaded")
        if not time_limit_s > 0 or not math.isfinite(time_limit_s):
            raise SolveFailed("time-limit")
        highs = self._highs
        try:
            highs.setOptionValue("time_limit", highs.getRunTime() + time_limit_s)
            highs.run()
            status = highs.getModelStatus()
        except Exception as exc:  # noqa: BLE001 - the solver's fault, never the gateway's
            raise SolveFailed(f"solver-error:{type(exc).__name__}") from exc
        if status == highspy.HighsModelStatus.kTimeLimit:
            raise SolveFailed("time-limit")
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolveFailed(f"status:{highs.modelStatusToString(status)}")

    def clock(self) -> float:
        """Seconds this instance has spent solving (the clock its time limits are on)."""
        return float(self._highs.getRunTime())

    def values(self) -> FloatArray:
        return np.asarray(self._highs.getSolution().col_value, dtype=np.float64)

    def row_duals(self) -> FloatArray:
        """∂cost/∂(row bound) per row: for a balance row, what one more Wh of load would cost."""
        return np.asarray(self._highs.getSolution().row_dual, dtype=np.float64)

    def col_dual(self, col: int) -> float:
        """∂cost/∂(column bound) of a column held at a bound: the slope of the optimal cost."""
        return float(self._highs.getSolution().col_dual[col])

    def objective(self) -> float:
        return float(self._highs.getInfo().objective_function_value)

    def bound(self, col: int, lower: float, upper: float) -> None:
        """Change one column's bounds (the next ``run`` starts from the last basis)."""
        self._highs.changeColBounds(col, lower, upper)

    def set_cost(self, col: int, cost: float) -> None:
        self._highs.changeColCost(col, cost)
