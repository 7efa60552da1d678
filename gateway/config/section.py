"""What every section of the gateway's config shares: frozen, no unknown keys, no infinite or NaN
number (TOML allows both), node ids in one shape, durations counted as the market counts them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def ms(seconds: float) -> int:
    """A duration of the config in the milliseconds the market counts in (as it rounds them)."""
    return int(seconds * 1000)
