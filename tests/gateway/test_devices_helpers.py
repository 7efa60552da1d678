"""A real Modbus TCP server presenting a SunSpec map, for the device-layer tests.

The map is laid out by ``protocols.sunspec.DeviceMap`` (the same layout our firmware and simulator
serve) and served by pymodbus's own server, so the gateway's client meets an independent Modbus
implementation over a real socket. ``fault`` injects what a field device does wrong: an exception
code, or silence (the request is held until the client has given up).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.sunspec import DeviceMap, encode

PointValues = Mapping[tuple[int, str], int | str | None]

COMMON: PointValues = {
    (1, "Mn"): "gridpeer",
    (1, "Md"): "test-device",
    (1, "SN"): "SN-0001",
    (1, "Vr"): "1.0",
    (1, "DA"): 1,
}

BATTERY: PointValues = {
    **COMMON,
    (713, "WHRtg"): 10000, (713, "WHAvail"): 5550, (713, "SoC"): 555, (713, "SoH"): 1000,
    (713, "WH_SF"): 0, (713, "Pct_SF"): -1,
    (802, "AHRtg"): 200, (802, "WHRtg"): 10000, (802, "WChaRteMax"): 3000,
    (802, "WDisChaRteMax"): 2500, (802, "SoCMax"): 95, (802, "SoCMin"): 10, (802, "SoC"): 55,
    (802, "W"): -1200, (802, "A"): -25, (802, "V"): 480, (802, "LocRemCtl"): 0, (802, "Typ"): 4,
    (802, "State"): 3, (802, "ChaSt"): 3, (802, "SetOp"): 1, (802, "SetInvState"): 1,
    (802, "AlmRst"): 0, (802, "AHRtg_SF"): 0, (802, "WHRtg_SF"): 0, (802, "WChaDisChaMax_SF"): 0,
    (802, "SoC_SF"): 0, (802, "V_SF"): -1, (802, "CellV_SF"): -3, (802, "A_SF"): -1,
    (802, "AMax_SF"): 0, (802, "W_SF"): 0,
    (124, "WChaMax"): 3000, (124, "WChaGra"): 100, (124, "WDisChaGra"): 100,
    (124, "StorCtl_Mod"): 0, (124, "OutWRte"): 10000, (124, "InWRte"): 10000,
    (124, "InOutWRte_WinTms"): 0, (124, "InOutWRte_RvrtTms"): 0, (124, "InOutWRte_RmpTms"): 0,
    (124, "WChaMax_SF"): 0, (124, "WChaDisChaGra_SF"): 0, (124, "InOutWRte_SF"): -2,
}

METER: PointValues = {
    **COMMON,
    (203, "A"): 52, (203, "AphA"): 52, (203, "A_SF"): -1,
    (203, "PhV"): 2301, (203, "PhVphA"): 2301, (203, "V_SF"): -1,
    (203, "Hz"): 5001, (203, "Hz_SF"): -2,
    (203, "W"): 1234, (203, "WphA"): 1234, (203, "W_SF"): 0,
    (203, "TotWhImp"): 123456, (203, "TotWhExp"): 6543, (203, "TotWh_SF"): 0,
    (203, "Evt"): 0,
}

PV: PointValues = {
    **COMMON,
    (701, "ACType"): 1, (701, "W"): 3210, (701, "W_SF"): 0, (701, "TotWhInj"): 987654,
    (701, "TotWh_SF"): 0, (701, "LNV"): 2305, (701, "V_SF"): -1, (701, "Hz"): 50000,
    (701, "Hz_SF"): -3,
    (702, "WMaxRtg"): 4000, (702, "W_SF"): 0,
    (704, "WMaxLimPctEna"): 0, (704, "WMaxLimPct"): 100, (704, "WMaxLimPctRvrtTms"): 0,
    (704, "WMaxLimPctRvrt"): 100, (704, "WMaxLimPctEnaRvrt"): 0, (704, "WMaxLimPct_SF"): 0,
}

DCDC: PointValues = {
    **COMMON,
    (714, "DCA"): 52, (714, "DCW"): 2500, (714, "DCA_SF"): -1, (714, "DCV_SF"): -1,
    (714, "DCW_SF"): 0, (714, "Prt[0].DCV"): 480, (714, "Prt[1].DCV"): 3800,
    (64200, "Mode"): 0, (64200, "ASet"): 0, (64200, "VSet"): 3800, (64200, "AMax"): 200,
    (64200, "VMax"): 4000, (64200, "VMin"): 3600, (64200, "RvrtTms"): 0, (64200, "RvrtRem"): 0,
    (64200, "St"): 0, (64200, "Trip"): 0, (64200, "DCV"): 3800, (64200, "DCA"): 0,
    (64200, "DCW"): 0, (64200, "A_SF"): -1, (64200, "V_SF"): -1, (64200, "W_SF"): 0,
}

ROLE_VALUES: Mapping[str, PointValues] = {
    "battery": BATTERY, "meter": METER, "pv": PV, "dcdc": DCDC,
}


def role_registers(role: str, values: PointValues, *, base: int = 40000) -> dict[int, int]:
    """Every register of ``role``'s map: the chain's structure plus ``values`` (raw), the rest
    "not implemented" exactly as SunSpec encodes it."""
    dmap = DeviceMap.for_role(role, base=base)
    regs: dict[int, int] = {}
    for block, model in zip(dmap.blocks, dmap.models, strict=True):
        for point in model.points[2:]:
            raw = values.get((model.id, point.name))
            for i, reg in enumerate(encode(point, raw)):
                regs[block.address + point.offset + i] = reg
    regs.update(dmap.fixed_registers())
    return regs


class ServedDevice:
    """A SunSpec device behind a pymodbus TCP server on 127.0.0.1 (one unit id)."""

    def __init__(self, *, registers: Mapping[int, int], unit: int = 1) -> None:
        self.fault: ExcCodes | str | None = None
        """None, an ``ExcCodes`` to answer every request with, or "silent" to never answer."""
        self.requests = 0
        self.stopped = asyncio.Event()
        """Set when the server stops: a silent device's pending requests end then, so none
        outlives the test (``no_leaked_tasks``)."""
        self.writes: list[tuple[int, list[int]]] = []
        start = min(registers)
        values = [registers.get(a, 0) for a in range(start, max(registers) + 1)]
        self._start = start
        self._live: list[int] | None = None
        device = SimDevice(
            id=unit,
            simdata=[SimData(address=start, values=values, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        self.port = 0

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        self._live = registers
        if self.fault == "silent":
            await self.stopped.wait()
        if isinstance(self.fault, ExcCodes):
            return self.fault
        if values is not None:
            self.writes.append((address, [int(v) for v in values]))
        return None

    def register(self, address: int) -> int:
        """The live value of a register (after the server has handled at least one request)."""
        assert self._live is not None, "no request served yet"
        return self._live[address - self._start]

    def set_register(self, address: int, value: int) -> None:
        """Change a register as the device's own firmware would (e.g. a new measurement)."""
        assert self._live is not None, "no request served yet"
        self._live[address - self._start] = value


@asynccontextmanager
async def serve(
    role: str, values: PointValues | None = None, *, base: int = 40000, unit: int = 1
) -> AsyncIterator[ServedDevice]:
    """Serve ``role``'s SunSpec map with ``values`` (default: plausible ones) in the block."""
    regs = role_registers(role, ROLE_VALUES[role] if values is None else values, base=base)
    served = ServedDevice(registers=regs, unit=unit)
    await served.server.serve_forever(background=True)
    listener = served.server.transport
    served.port = listener.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield served
    finally:
        served.stopped.set()
        await served.server.shutdown()


async def test_served_map_starts_with_suns_and_ends_with_ffff() -> None:
    """The helper itself: the raw map has the SunSpec framing the gateway will look for."""
    regs = role_registers("battery", BATTERY)
    dmap = DeviceMap.for_role("battery")
    assert (regs[40000], regs[40001]) == (0x5375, 0x6E53)
    assert (regs[dmap.end_address], regs[dmap.end_address + 1]) == (0xFFFF, 0)
