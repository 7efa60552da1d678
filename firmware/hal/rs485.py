"""Half-duplex RS-485 on a UART plus a driver-enable (DE) pin.

The Modbus core is bytes in, bytes out; this is the little bit of timing it leaves to the board.
A transceiver must drive the bus only while our frame is on the wire: raising DE late clips the
first byte, dropping it early clips the CRC (the last byte is still in the UART's shift register
when ``write`` returns), holding it long collides with the master's next request. So: DE high,
write, ``flush`` until the shifter is empty, hold one more character time for the line to settle,
DE low.
"""

try:
    from time import sleep_us
except ImportError:  # CPython has no sleep_us; MicroPython has
    from time import sleep as _sleep

    def sleep_us(us):
        _sleep(us / 1_000_000)


class Rs485:
    """One RS-485 port: ``uart`` (read/write/flush), ``de`` pin (value), line ``baud``."""

    def __init__(self, uart, de, baud, sleep=sleep_us):
        if baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud!r}")
        self._uart = uart
        self._de = de
        self._char_us = (11 * 1_000_000 + baud - 1) // baud  # 1 start, 8 data, parity/stop, stop
        self._sleep = sleep
        de.value(0)

    def read(self):
        """Bytes that arrived since the last call, or None."""
        return self._uart.read()

    def write(self, frame):
        """Send one frame, owning the bus only while it is on the wire."""
        self._de.value(1)
        self._uart.write(frame)
        self._uart.flush()
        self._sleep(self._char_us)
        self._de.value(0)
