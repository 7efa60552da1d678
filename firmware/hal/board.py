"""The ESP32 meter board's HAL: RS-485 on a UART with a driver-enable pin, and an ATM90E26-class
single-phase metering IC on SPI. ``firmware/main.py`` calls ``make(baud)``.

Off the board ``import machine`` fails (or it lacks UART/SPI) and ``main.load_hal`` falls back to
the fakes; tests run this file in the WebAssembly port against a recording ``machine``
(tests/firmware/fake_machine.py).

Wiring (change ``PINS`` for another board): UART2 TX GPIO17, RX GPIO16, transceiver DE (and /RE
tied to it) GPIO4; SPI2 SCK GPIO18, MOSI GPIO23, MISO GPIO19, metering IC chip select GPIO5.

RS-485: this file only opens the UART (8N1, no receive timeout, a 256-byte receive ring) and
the DE pin, low = listening. ``firmware/hal/rs485.py`` owns the timing: DE high, write,
``UART.flush()`` (returns once the last stop bit has left the shifter on the ESP32 port), one more
character time, DE low.

Metering IC assumptions (Atmel/Microchip ATM90E26 datasheet; close relatives differ in addresses):

- SPI mode 3 (CPOL 1, CPHA 1), MSB first, at most 200 kHz; chip select active low. A transaction
  is 24 bits: address byte (bit 7 = 1 read, 0 write), then 16 data bits. Buffers are
  preallocated, so a sample allocates nothing but the returned tuple.
- Measurement registers: ``Irms`` 0x48 (mA), ``Urms`` 0x49 (10 mV), ``Pmean`` 0x4A (W, two's
  complement), ``Freq`` 0x4C (10 mHz).
- Energy: ``APenergy`` 0x40 (forward active) and ``ANenergy`` 0x41 (reverse active), in 0.1
  meter-constant pulses, **cleared on read**. The HAL is therefore the accumulator: it reads them
  on every ``energy_wh()`` and adds them to lifetime counters of 0.1-pulse units, converted with
  the meter constant (``imp_per_kwh``, 3200 by default, matching the chip's ``PLconst``).
- "Forward" is import from the grid when the CT's arrow points to the house; ``reverse=True``
  swaps both power sign and energy direction for a CT mounted the other way round.
- Calibration (``CalStart`` 0x20 .. ``CS1`` 0x2C, ``AdjStart`` 0x30 .. ``CS2`` 0x3B) is per
  device and comes from the installer's calibration as ``(address, value)`` pairs including the
  checksum; ``make`` writes them between the start code 0x5678 and the check code 0x8765. Without
  them the chip runs on its reset defaults (uncalibrated: readings are only indicative).

Not done here: the lifetime counters restart at 0 on a power cycle (they would need to be
persisted, like the tag sequence number); the ``SysStatus`` checksum-error bits are not read.
"""

from time import sleep_us, ticks_diff, ticks_ms

import machine

from firmware.compat import const

if not (hasattr(machine, "UART") and hasattr(machine, "SPI")):
    # A port whose ``machine`` has no UART/SPI (the WebAssembly port's stand-in) is no board:
    # ImportError is what tells main.load_hal to use the fakes.
    raise ImportError("machine has no UART/SPI: not an ESP32 board")

PINS = {"uart": 2, "tx": 17, "rx": 16, "de": 4, "spi": 2, "sck": 18, "mosi": 23, "miso": 19,
        "cs": 5}

_READ = const(0x80)
_APENERGY = const(0x40)
_ANENERGY = const(0x41)
_IRMS = const(0x48)
_URMS = const(0x49)
_PMEAN = const(0x4A)
_FREQ = const(0x4C)
_CALSTART = const(0x20)
_ADJSTART = const(0x30)
_START = const(0x5678)
_CHECK = const(0x8765)
_SPI_HZ = const(200_000)
_CS_SETUP_US = const(1)


class Clock:
    """The board's monotonic milliseconds (they wrap: use ``ticks_diff``)."""

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, new, old):
        return ticks_diff(new, old)


class Atm90e26:
    """The metering front end (``sample()``/``energy_wh()``, see firmware/hal/__init__.py)."""

    def __init__(self, spi, cs, *, imp_per_kwh=3200, reverse=False, cal=(), adj=()):
        if imp_per_kwh <= 0:
            raise ValueError("imp_per_kwh must be > 0")
        self._spi = spi
        self._cs = cs
        self._tx = bytearray(3)
        self._rx = bytearray(3)
        self._sign = -1 if reverse else 1
        self._per_wh = imp_per_kwh * 10  # 0.1-pulse units per kWh -> per 1000 Wh
        self._imp = 0  # lifetime, 0.1-pulse units
        self._exp = 0
        cs.value(1)
        self._load(_CALSTART, cal)
        self._load(_ADJSTART, adj)

    def _xfer(self, first, value):
        tx = self._tx
        tx[0] = first
        tx[1] = value >> 8
        tx[2] = value & 0xFF
        self._cs.value(0)
        sleep_us(_CS_SETUP_US)
        self._spi.write_readinto(tx, self._rx)
        self._cs.value(1)
        return (self._rx[1] << 8) | self._rx[2]

    def read(self, addr):
        """One 16-bit register."""
        return self._xfer(_READ | addr, 0xFFFF)

    def write(self, addr, value):
        self._xfer(addr & 0x7F, value & 0xFFFF)

    def _load(self, start, regs):
        if not regs:
            return
        self.write(start, _START)
        for addr, value in regs:
            self.write(addr, value)
        self.write(start, _CHECK)

    def sample(self):
        """``(w, v_x10, a_x100, hz_x100)``, w + = import from the grid."""
        w = self.read(_PMEAN)
        if w & 0x8000:
            w -= 0x10000
        w *= self._sign
        v_x10 = self.read(_URMS) // 10
        a_x100 = self.read(_IRMS) // 10
        hz_x100 = self.read(_FREQ)
        return w, v_x10, -a_x100 if w < 0 else a_x100, hz_x100

    def energy_wh(self):
        """Lifetime ``(import_wh, export_wh)``: drains the chip's read-to-clear accumulators."""
        fwd = self.read(_APENERGY)
        rev = self.read(_ANENERGY)
        if self._sign < 0:
            fwd, rev = rev, fwd
        self._imp += fwd
        self._exp += rev
        return self._imp * 1000 // self._per_wh, self._exp * 1000 // self._per_wh


class BoardHal:
    """What ``firmware/main.py`` expects of a HAL, for the meter board."""

    def __init__(self, baud, pins=PINS, **metering):
        self.clock = Clock()
        self.uart = machine.UART(pins["uart"], baudrate=baud, bits=8, parity=None, stop=1,
                                 tx=pins["tx"], rx=pins["rx"], timeout=0, rxbuf=256)
        self.de = machine.Pin(pins["de"], machine.Pin.OUT, value=0)
        spi = machine.SPI(pins["spi"], baudrate=_SPI_HZ, polarity=1, phase=1, bits=8,
                          firstbit=machine.SPI.MSB, sck=machine.Pin(pins["sck"]),
                          mosi=machine.Pin(pins["mosi"]), miso=machine.Pin(pins["miso"]))
        cs = machine.Pin(pins["cs"], machine.Pin.OUT, value=1)
        self.meter = Atm90e26(spi, cs, **metering)
        self.nameplate = {}  # a meter board has no power stage to rate


def make(baud):
    """The HAL ``firmware/main.py``'s ``load_hal`` builds the board on."""
    return BoardHal(baud)
