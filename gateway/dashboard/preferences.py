"""The owner's preferences as the dashboard edits them, and where they are kept between restarts.

The dashboard's model is stricter than the config's (``strict``: a JSON ``"120"`` is refused
rather than coerced, and prices have a sanity ceiling), because it faces a browser form rather
than a file the owner edited; it converts to ``PreferencesConfig`` for the node. The file is
written atomically
(temporary file, then rename) so a power cut during a save leaves the old preferences, never half a
JSON document that would silently fall back to the defaults.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import PreferencesConfig

log = logging.getLogger(__name__)

_MAX_PRICE = 100_000  # µ/Wh = 100 €/kWh: far beyond any tariff, so only typos are refused

ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["07:30"])]


class OwnerPreferences(BaseModel):
    """What the owner may set. Prices in µ/Wh (0.25 €/kWh = 250); strict: ``"120"`` is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    min_sell_price: int = Field(ge=0, le=_MAX_PRICE)
    max_buy_price: int = Field(ge=0, le=_MAX_PRICE)
    reserve_pct: float = Field(ge=0, le=100)
    ev_ready_by: ClockTime | None = None

    @classmethod
    def from_config(cls, config: PreferencesConfig) -> OwnerPreferences:
        return cls.model_validate(config.model_dump(exclude={"v2g_min_soc_pct"}))

    def to_config(self) -> PreferencesConfig:
        return PreferencesConfig.model_validate(self.model_dump())


class PreferencesStore:
    """``state_dir/preferences.json``: the owner's last saved preferences."""

    def __init__(self, *, path: Path) -> None:
        self.path = path

    def load(self) -> OwnerPreferences | None:
        """The saved preferences; None when there are none or the file cannot be trusted."""
        try:
            return OwnerPreferences.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            log.warning("%s: ignoring saved preferences: %s", self.path, exc)
            return None

    def save(self, prefs: OwnerPreferences) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(prefs.model_dump(), indent=1))
        os.replace(tmp, self.path)
