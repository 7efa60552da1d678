"""What every section of the gateway's config shares: frozen, no unknown keys, no infinite or NaN
number (TOML allows both), node ids in one shape, durations counted as the market counts them."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def ms(seconds: float) -> int:
    """A duration of the config in the milliseconds the market counts in (as it rounds them)."""
    return int(seconds * 1000)


def mqtt_url(value: str, *, example: str) -> str:
    """``value`` if it is an ``mqtt://`` or ``mqtts://`` URL naming a host; else ValueError
    showing ``example``, the shape the field wants."""
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker must look like {example}")
    return value
