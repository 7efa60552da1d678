"""What a driver commands on its device, and through which SunSpec points.

A driver says it as data (``Command``) so the installer's scan (``gridpeer devices scan``), the
status page and the gateway itself read one answer: what will be written where, or why the
device's map cannot carry it. A refusal is known from the chain (a control model absent) or only
after a read (a scale factor or revert timer the device leaves "not implemented"), so a driver's
``commands`` reflect its last reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.devices.model_reader import ModelData
from gateway.devices.plausibility import Uses
from gateway.devices.poller import Readable

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Command:
    """One setpoint a driver writes. ``points`` are the ones it writes, revert timer included;
    ``refused`` says why this device cannot take it (None: it can)."""

    what: str
    model: int | None
    points: tuple[str, ...]
    refused: str | None = None


class Described(Protocol):
    """What every driver says about itself: the models it drives the device through, the points
    its readings come from (None: every point of its models) and its commands."""

    @property
    def family(self) -> str: ...

    @property
    def uses(self) -> Uses | None: ...

    @property
    def commands(self) -> tuple[Command, ...]: ...


class Driver(Readable[R_co], Described, Protocol[R_co]):
    """A driver: read, and described."""


def unimplemented(model: ModelData, names: Iterable[str]) -> str | None:
    """Why ``model`` cannot carry a command that writes ``names``: the points (and their scale
    factors) the device leaves "not implemented"; None when it has them all."""
    gaps: list[str] = []
    for name in names:
        if model.missing(name) is not None and model.unscaled[name] is None:
            gaps.append(name)
        sf = model.definition.point(name).sf
        if isinstance(sf, str) and model.unscaled.get(sf) is None and sf not in gaps:
            gaps.append(sf)
    if not gaps:
        return None
    return f"model {model.definition.id} leaves {', '.join(gaps)} not implemented"
