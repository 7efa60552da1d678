"""The home's learned PV and load profile on disk, so a restart does not forget what it learned.

Saved at every interval's end, atomically (a crash leaves the old file or the new one); a file
that cannot be read starts a fresh profile, logged, rather than stopping the gateway.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.forecast import HomeForecaster

log = logging.getLogger(__name__)


class ForecastFile:
    """``forecaster``, loaded from ``path`` if it holds one, saved back with :meth:`save`."""

    def __init__(self, path: Path, *, node: str) -> None:
        self.path = path
        self.forecaster = self._load(node)

    def _load(self, node: str) -> HomeForecaster:
        try:
            return HomeForecaster.from_json(self.path.read_text())
        except FileNotFoundError:
            return HomeForecaster()
        except ValueError as exc:
            log.warning("%s: starting a fresh forecast profile: %s", node, exc)
            return HomeForecaster()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.forecaster.to_json())
        os.replace(tmp, self.path)
