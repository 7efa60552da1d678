"""Find a device's SunSpec map: the "SunS" marker, then the chain of models up to 0xFFFF.

Discovery needs nothing but the SunSpec map itself, so a commercial inverter or meter is found the
same way as our own firmware. SunSpec allows the map at 40000, 0 or 50000 (tried in that order, the
most common first); an address the device does not have is answered with a Modbus exception, which
here only means "not at this base". A timeout is not taken as "not SunSpec": the device is silent,
and saying it is not SunSpec would send an installer looking in the wrong place.

Every read of the scan is confirmed: repeated until two answers agree. Modbus TCP carries no
checksum, and one corrupted reply would otherwise make the marker vanish or put a model at the
wrong address for as long as the gateway runs (readings are checked each poll instead, see
``gateway/devices/plausibility.py``). A device that gives the same answer twice is taken at its
word, exceptions included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway.devices.bus import ModbusBus
from gateway.devices.errors import BadDeviceData, MissingModel, ModbusException, NotSunSpec
from gateway.devices.model_reader import ModelLocation, read_models

SUNSPEC_BASES = (40000, 0, 50000)
_SUNS = (0x5375, 0x6E53)  # "SunS" as two big-endian registers
_END_ID = 0xFFFF
_COMMON_MODEL = 1
_MAX_MODELS = 256
"""More models than any real device carries: a chain this long is a loop in garbage data."""
_READS = 6
"""Attempts at most for two agreeing answers to one read of the scan."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CommonInfo:
    """What SunSpec model 1 says about the device (strings are None where not implemented)."""

    manufacturer: str
    model: str
    options: str | None
    version: str | None
    serial: str
    device_address: int | None


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A device's unit id, where its map starts, and every model in chain order."""

    unit: int
    base_address: int
    chain: tuple[ModelLocation, ...]
    common: CommonInfo

    @property
    def models(self) -> Mapping[int, int]:
        """Model id -> address of its ID register (the first instance if a model repeats)."""
        found: dict[int, int] = {}
        for loc in self.chain:
            found.setdefault(loc.model_id, loc.address)
        return found

    def location(self, model_id: int) -> ModelLocation | None:
        """The first instance of ``model_id`` in the chain, or None if the device lacks it."""
        return next((loc for loc in self.chain if loc.model_id == model_id), None)

    def require(self, *, driver: str, model_ids: tuple[int, ...]) -> tuple[ModelLocation, ...]:
        """The locations of ``model_ids``, or ``MissingModel`` naming every one that is absent."""
        found = [self.location(mid) for mid in model_ids]
        missing = tuple(mid for mid, loc in zip(model_ids, found, strict=True) if loc is None)
        if missing:
            raise MissingModel(driver=driver, missing=missing, present=self._present())
        return tuple(loc for loc in found if loc is not None)

    def require_one_of(self, *, driver: str, model_ids: tuple[int, ...]) -> ModelLocation:
        """The first of ``model_ids`` (in preference order) that the device has."""
        for mid in model_ids:
            loc = self.location(mid)
            if loc is not None:
                return loc
        raise MissingModel(driver=driver, missing=model_ids, present=self._present(),
                           one_of=len(model_ids) > 1)

    def _present(self) -> tuple[int, ...]:
        return tuple(loc.model_id for loc in self.chain)


async def discover(bus: ModbusBus, *, unit: int) -> DiscoveredDevice:
    """Locate the SunSpec map of ``unit`` on ``bus`` and walk its model chain.

    Raises ``NotSunSpec`` if no base holds the marker, ``BadDeviceData`` for a malformed chain,
    and the bus's ``DeviceTimeout``/``DeviceUnreachable`` if the device does not answer.
    """
    base = await _find_base(bus, unit)
    chain = await _walk_chain(bus, unit, base)
    if chain[0].model_id != _COMMON_MODEL:
        raise BadDeviceData(
            f"unit {unit}: first model at {chain[0].address} is {chain[0].model_id}; "
            "SunSpec requires the common model 1 first"
        )
    common = (await _confirmed(lambda: read_models(bus, unit=unit, locations=(chain[0],))))[
        _COMMON_MODEL]
    info = CommonInfo(
        manufacturer=common.text("Mn"),
        model=common.text("Md"),
        options=common.optional_text("Opt"),
        version=common.optional_text("Vr"),
        serial=common.text("SN"),
        device_address=common.optional_int("DA"),
    )
    return DiscoveredDevice(unit=unit, base_address=base, chain=chain, common=info)


async def _find_base(bus: ModbusBus, unit: int) -> int:
    for base in SUNSPEC_BASES:
        try:
            marker = await _registers(bus, unit, base)
        except ModbusException as exc:
            if exc.code in (2, 3):  # no such register / count not allowed there
                continue
            raise
        if marker == _SUNS:
            return base
    raise NotSunSpec(
        f"unit {unit} on {bus}: no 'SunS' marker at any of {list(SUNSPEC_BASES)}"
    )


async def _walk_chain(bus: ModbusBus, unit: int, base: int) -> tuple[ModelLocation, ...]:
    chain: list[ModelLocation] = []
    address = base + 2
    while len(chain) <= _MAX_MODELS:
        if address + 2 > 0x10000:
            raise BadDeviceData(f"unit {unit}: model chain runs past register 65535")
        model_id, length = await _header(bus, unit, address)
        if model_id == _END_ID:
            if not chain:
                raise BadDeviceData(f"unit {unit}: SunSpec map at {base} holds no models")
            return tuple(chain)
        if model_id == 0:
            raise BadDeviceData(f"unit {unit}: model id 0 at register {address}")
        chain.append(ModelLocation(model_id=model_id, address=address, length=length))
        address += 2 + length
    raise BadDeviceData(f"unit {unit}: more than {_MAX_MODELS} models; no 0xFFFF end marker")


async def _registers(bus: ModbusBus, unit: int, address: int, count: int = 2
                     ) -> tuple[int, ...]:
    """Registers of the scan (the marker, a model's ID and L), confirmed."""
    return await _confirmed(lambda: bus.read_registers(unit=unit, address=address, count=count))


async def _header(bus: ModbusBus, unit: int, address: int) -> tuple[int, int]:
    """A model's ID and L. Some devices end their map with the end marker's ID and no L register
    after it, and refuse a read past it: then the ID alone, which must be the end marker."""
    try:
        model_id, length = await _registers(bus, unit, address)
    except ModbusException as exc:
        if exc.code not in (2, 3) or await _registers(bus, unit, address, 1) != (_END_ID,):
            raise
        return _END_ID, 0
    return model_id, length


async def _confirmed(read: Callable[[], Awaitable[T]]) -> T:
    """The answer of ``read`` once two attempts agree; an exception or garbage the device says
    twice is its answer. A timeout is not an answer: it is raised at once, as the bus gives up."""
    seen: list[T | ModbusException | BadDeviceData] = []
    for _ in range(_READS):
        answer: T | ModbusException | BadDeviceData
        try:
            answer = await read()
        except (ModbusException, BadDeviceData) as exc:
            answer = exc
        if any(_same(answer, earlier) for earlier in seen):
            if isinstance(answer, ModbusException | BadDeviceData):
                raise answer
            return answer
        seen.append(answer)
    raise BadDeviceData(f"{_READS} answers to one read of the SunSpec map and no two alike: "
                        "the link corrupts replies")


def _same(a: object, b: object) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return a == b
