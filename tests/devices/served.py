"""SunSpec maps nobody in this project wrote, served over Modbus TCP for the device tests.

Every register image comes from pysunspec2: its bundled device images (``sunspec2/tests/
test_data``, read by its ``FileClientDevice``) or models it builds from its own model definitions
and point values given by name (``sunspec2.device.Model``), encoded by its ``get_mb``. The tests
name values, never registers; the framing ("SunS", the end marker) is pysunspec2's too. pymodbus's
own server serves them, one image per unit id behind one TCP address, and records the writes.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sunspec2
import sunspec2.device as ss_device
import sunspec2.file.client as ss_file
import sunspec2.mdef as ss_mdef
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

TEST_DATA = Path(sunspec2.__file__).parent / "tests" / "test_data"
DER_1547 = TEST_DATA / "device_1547.json"
"""pysunspec2's IEEE 1547 DER (1, 701–713) with the values it ships: draft-era in places."""
INVERTER_129 = TEST_DATA / "inverter_123.json"
"""pysunspec2's inverter image holding the common model and 129 only."""

COMMON = {"Mn": "ExampleCo", "Md": "Hybrid-5000", "SN": "EX-42", "Vr": "2.1", "DA": 1}
Values = Mapping[str, Any]


def _registers(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


def device_file(path: Path, changes: Mapping[int, Values] | None = None,
                tmp: Path | None = None) -> list[int]:
    """The models of a pysunspec2 device image, in chain order; ``changes`` sets points by name
    (model id → values) in a copy written to ``tmp``."""
    if changes:
        assert tmp is not None
        data = json.loads(path.read_text())
        for model in data["models"]:
            model.update(changes.get(model["ID"], {}))
        path = tmp / path.name
        path.write_text(json.dumps(data))
    dev = ss_file.FileClientDevice(filename=str(path))
    dev.scan()
    assert not [m.error_info for m in dev.model_list if m.error_info]
    return _registers(dev.get_mb())


def model(model_id: int, values: Values) -> list[int]:
    """One model built by pysunspec2 from its definition and ``values`` (raw, by point name;
    a repeating group as a list of dicts); points not given are "not implemented"."""
    built = ss_device.Model(model_id=model_id, data=dict(values))
    assert not built.error_info, built.error_info
    return _registers(built.get_mb())


def framed(models: Iterable[list[int]], *, base: int = 40000,
           end_length: bool = True) -> dict[int, int]:
    """A whole map at ``base``: "SunS", the models, the end marker (with its L register unless
    ``end_length`` is False, as some devices end their maps)."""
    regs = _registers(b"SunS")
    for m in models:
        regs += m
    regs.append(ss_mdef.END_MODEL_ID)
    if end_length:
        regs.append(0)
    return {base + i: r for i, r in enumerate(regs)}


class Served:
    """Register maps behind one pymodbus TCP server on 127.0.0.1, one per unit id.

    ``slow_first_s``: every new connection's first request is answered this late (a device whose
    Modbus stack wakes on connect). ``writes[unit]`` records each write as (address, values).
    """

    def __init__(self, maps: Mapping[int, Mapping[int, int]], *, slow_first_s: float = 0.0
                 ) -> None:
        self.writes: dict[int, list[tuple[int, list[int]]]] = {unit: [] for unit in maps}
        self.requests = 0
        self._slow_first_s = slow_first_s
        self._fresh = False
        self._live: dict[int, tuple[int, list[int]]] = {}
        devices = []
        for unit, regs in maps.items():
            start = min(regs)
            values = [regs.get(a, 0) for a in range(start, max(regs) + 1)]
            devices.append(SimDevice(
                id=unit, simdata=[SimData(address=start, values=values,
                                          datatype=DataType.REGISTERS)],
                action=self._action_for(unit, start)))
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", 0),
                                      trace_connect=self._connected)
        self.port = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _connected(self, connected: bool) -> None:
        if connected:
            self._fresh = True

    def _action_for(self, unit: int, start: int) -> Any:
        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], values: list[int] | list[bool] | None
                         ) -> ExcCodes | None:
            self.requests += 1
            self._live[unit] = (start, registers)
            if self._fresh:
                self._fresh = False
                await asyncio.sleep(self._slow_first_s)
            if values is not None:
                self.writes[unit].append((address, [int(v) for v in values]))
            return None
        return action

    def register(self, unit: int, address: int) -> int:
        """The live value of a register (after the unit has served a request)."""
        start, registers = self._live[unit]
        return registers[address - start]

    def set_register(self, unit: int, address: int, value: int) -> None:
        """Change a register as the device's own firmware would."""
        start, registers = self._live[unit]
        registers[address - start] = value


@asynccontextmanager
async def serve(maps: Mapping[int, Mapping[int, int]], *, slow_first_s: float = 0.0
                ) -> AsyncIterator[Served]:
    """Serve ``maps`` (unit id → registers) until the block ends."""
    served = Served(maps, slow_first_s=slow_first_s)
    await served.server.serve_forever(background=True)
    listener = served.server.transport
    served.port = listener.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield served
    finally:
        await served.server.shutdown()
