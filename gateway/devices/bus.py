"""One object per Modbus transport: the only code in the gateway that talks to pymodbus.

A bus owns one pymodbus async client (TCP or RTU serial) and is shared by every device behind it.
It adds what the drivers should not each re-invent:

- a lock, so one request is on the wire at a time (RS-485 is half duplex; on TCP it keeps responses
  from being matched to the wrong request after a timeout);
- retries with exponential backoff, released between attempts so a dead device on a shared bus
  delays its neighbours by one timeout, not by its whole retry budget;
- reconnects on demand (pymodbus's own background reconnect is switched off: a task we do not own
  would outlive the bus);
- its own timeouts, as ``asyncio`` timeouts around each request (pymodbus's is only a guard);
- translation of every pymodbus failure into a ``gateway.devices.errors`` type.

After a timeout the link is closed and reopened on the next attempt: a late answer to the old
request then cannot be taken for the answer to the new one. The first answer on a newly opened
link may take longer than the rest (an inverter's Modbus stack waking, a TCP-to-RS-485 gateway
opening its line): it is given ``first_timeout_s``, every later one ``timeout_s``. Without that a
device slower to answer first than ``timeout_s`` would never answer at all, since every timeout
closes the link it would have answered on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pymodbus import exceptions as pymodbus_errors
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.pdu import ModbusPDU

from gateway.aio import raise_if_cancelling
from gateway.devices.errors import (
    BadDeviceData,
    DeviceError,
    DeviceTimeout,
    DeviceUnreachable,
    ModbusException,
)

_log = logging.getLogger(__name__)

MAX_READ_REGISTERS = 125
"""Modbus limit for one FC03 request (the PDU holds 250 data bytes)."""
MAX_WRITE_REGISTERS = 123
"""Modbus limit for one FC16 request."""

_READ_HOLDING = 3
_WRITE_MULTIPLE = 16
_RETRYABLE_EXCEPTION_CODES = frozenset({5, 6})
"""Acknowledge and busy: the device asks us to come back, so it is worth a retry."""

_Request = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


@dataclass(slots=True)
class BusStats:
    """Counters for the health page; they only ever grow."""

    requests: int = 0
    failures: int = 0
    retries: int = 0
    timeouts: int = 0
    exception_responses: int = 0
    connects: int = 0


class ModbusBus:
    """Transport-independent part of a bus; use ``ModbusTcpBus`` or ``ModbusSerialBus``.

    The bus connects lazily on the first request, so entering it never fails because a device is
    still booting: the first read raises ``DeviceUnreachable`` instead, which a poller counts.
    """

    def __init__(
        self,
        *,
        client: ModbusBaseClient,
        label: str,
        timeout_s: float,
        first_timeout_s: float,
        retries: int,
        backoff_s: float,
        backoff_max_s: float,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if first_timeout_s < timeout_s:
            raise ValueError(f"first_timeout_s must be >= timeout_s, got {first_timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0 or backoff_max_s < backoff_s:
            raise ValueError("need 0 <= backoff_s <= backoff_max_s")
        self._client = client
        self._label = label
        self._timeout_s = timeout_s
        self._first_timeout_s = first_timeout_s
        self._answered = False
        """Whether the link, as opened last, has answered yet (see the module doc)."""
        self._retries = retries
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._lock = asyncio.Lock()
        self.stats = BusStats()

    def __str__(self) -> str:
        return self._label

    async def __aenter__(self) -> ModbusBus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the link; a later request reopens it."""
        self._client.close()

    async def read_registers(self, *, unit: int, address: int, count: int) -> tuple[int, ...]:
        """Read ``count`` holding registers (FC03) starting at ``address``."""
        _check_unit(unit)
        _check_span(address, count, MAX_READ_REGISTERS)

        def request(client: ModbusBaseClient) -> Awaitable[ModbusPDU]:
            return client.read_holding_registers(address, count=count, device_id=unit)

        response = await self._execute(
            unit=unit, function=_READ_HOLDING, address=address, request=request
        )
        registers = tuple(response.registers)
        if len(registers) != count:
            raise BadDeviceData(
                f"{self._label} unit {unit}: asked for {count} registers at {address}, "
                f"got {len(registers)}"
            )
        return registers

    async def write_registers(self, *, unit: int, address: int, values: Sequence[int]) -> None:
        """Write ``values`` (FC16) starting at ``address``; FC16 even for one register.

        FC16 rather than FC06 for single registers because every SunSpec device must accept it,
        while some accept FC06 only on some registers.
        """
        _check_unit(unit)
        _check_span(address, len(values), MAX_WRITE_REGISTERS)
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values must be 0..65535, got {list(values)}")
        registers = list(values)

        def request(client: ModbusBaseClient) -> Awaitable[ModbusPDU]:
            return client.write_registers(address, registers, device_id=unit)

        await self._execute(unit=unit, function=_WRITE_MULTIPLE, address=address, request=request)

    async def _execute(
        self, *, unit: int, function: int, address: int, request: _Request
    ) -> ModbusPDU:
        self.stats.requests += 1
        attempt = 0
        while True:
            try:
                async with self._lock:
                    response = await self._attempt(request)
            except DeviceError as exc:
                raise_if_cancelling(exc)
                _log.debug("%s unit %d attempt %d failed: %s", self._label, unit, attempt, exc)
                if attempt >= self._retries:
                    self.stats.failures += 1
                    raise
            else:
                if not response.isError():
                    return response
                self.stats.exception_responses += 1
                refusal = ModbusException(
                    code=response.exception_code, function=function, address=address, unit=unit
                )
                retryable = response.exception_code in _RETRYABLE_EXCEPTION_CODES
                if not retryable or attempt >= self._retries:
                    self.stats.failures += 1
                    raise refusal
            self.stats.retries += 1
            await asyncio.sleep(min(self._backoff_max_s, self._backoff_s * 2**attempt))
            attempt += 1

    async def _attempt(self, request: _Request) -> ModbusPDU:
        if not self._client.connected:
            self.stats.connects += 1
            self._answered = False
            try:
                async with asyncio.timeout(self._first_timeout_s):
                    opened = await self._client.connect()
            except TimeoutError:
                opened = False
            if not opened:
                self._client.close()
                raise DeviceUnreachable(f"cannot open {self._label}")
        limit = self._timeout_s if self._answered else self._first_timeout_s
        # The request runs in its own task behind a shield: on Python 3.11 pymodbus's internal
        # wait_for can ignore a cancel and wait for an answer that never comes, which would hang
        # the gateway's shutdown. Cancelling us, or our timeout (pymodbus's own is only a guard,
        # see _guard_s), closes the link and abandons the request instead.
        inner = asyncio.ensure_future(request(self._client))
        inner.add_done_callback(_consume)
        try:
            async with asyncio.timeout(limit):
                response = await asyncio.shield(inner)
        except asyncio.CancelledError:
            self._client.close()
            inner.cancel()
            raise
        except (TimeoutError, pymodbus_errors.ModbusIOException) as exc:
            self.stats.timeouts += 1
            self._client.close()
            inner.cancel()
            raise DeviceTimeout(f"{self._label}: no valid answer within {limit} s") from exc
        except pymodbus_errors.ConnectionException as exc:
            self._client.close()
            raise DeviceUnreachable(f"{self._label}: connection lost ({exc})") from exc
        except pymodbus_errors.ModbusException as exc:
            self._client.close()
            raise BadDeviceData(f"{self._label}: {exc}") from exc
        self._answered = True
        return response


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned request's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class ModbusTcpBus(ModbusBus):
    """A Modbus TCP link to one host (which may serve several unit ids, e.g. a gateway).

    ``first_timeout_s`` (default ``timeout_s``): the wait for the first answer on a new link."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 502,
        timeout_s: float = 1.0,
        first_timeout_s: float | None = None,
        retries: int = 2,
        backoff_s: float = 0.1,
        backoff_max_s: float = 2.0,
    ) -> None:
        first = timeout_s if first_timeout_s is None else first_timeout_s
        client = AsyncModbusTcpClient(
            host, port=port, timeout=_guard_s(first), retries=0, reconnect_delay=0
        )
        super().__init__(
            client=client,
            label=f"modbus-tcp {host}:{port}",
            timeout_s=timeout_s,
            first_timeout_s=first,
            retries=retries,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )


class ModbusSerialBus(ModbusBus):
    """A Modbus RTU link over a serial port (RS-485), shared by every unit on the wire."""

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        timeout_s: float = 1.0,
        first_timeout_s: float | None = None,
        retries: int = 2,
        backoff_s: float = 0.1,
        backoff_max_s: float = 2.0,
    ) -> None:
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', got {parity!r}")
        first = timeout_s if first_timeout_s is None else first_timeout_s
        client = AsyncModbusSerialClient(
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            timeout=_guard_s(first),
            retries=0,
            reconnect_delay=0,
        )
        super().__init__(
            client=client,
            label=f"modbus-rtu {port}@{baudrate}",
            timeout_s=timeout_s,
            first_timeout_s=first,
            retries=retries,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )


def _guard_s(first_timeout_s: float) -> float:
    """pymodbus's own wait for an answer: the bus enforces its timeouts itself, so this only
    guards against a path of ours that forgets to (it must never be what fires in practice)."""
    return first_timeout_s * 2 + 1.0


def _check_unit(unit: int) -> None:
    if not 1 <= unit <= 247:
        raise ValueError(f"Modbus unit id must be 1..247, got {unit}")


def _check_span(address: int, count: int, limit: int) -> None:
    if not 1 <= count <= limit:
        raise ValueError(f"register count must be 1..{limit}, got {count}")
    if not 0 <= address or address + count > 0x10000:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")
