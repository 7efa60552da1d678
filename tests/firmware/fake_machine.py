"""A recording stand-in for MicroPython's ``machine`` module (tests only).

Written into the WebAssembly port's filesystem as ``/machine.py`` so that firmware/hal/board.py
runs there unchanged. Every pin level, UART write/flush and SPI transaction goes into ``LOG`` in
order, so a test can check the RS-485 direction pin against the frames and the SPI traffic
against the metering IC's register map. ``REGS`` holds what the fake metering IC answers per
register address (reads of 0x40/0x41 clear them, as the ATM90E26's energy registers do).
"""

LOG = []
REGS = {}
UARTS = []
_CLEAR_ON_READ = (0x40, 0x41)


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, pin_id, mode=-1, value=None):
        self.id = pin_id
        self.level = None
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        LOG.append(("pin", self.id, self.level))
        return None

    def __call__(self, v=None):
        return self.value(v)


class UART:
    def __init__(self, uart_id, **kwargs):
        self.id = uart_id
        self.config = kwargs
        self.rx = bytearray()
        UARTS.append(self)

    def inject(self, data):
        self.rx += data

    def read(self, n=-1):
        if not self.rx:
            return None
        data = bytes(self.rx)
        self.rx = bytearray()
        return data

    def write(self, buf):
        LOG.append(("uart", bytes(buf)))
        return len(buf)

    def flush(self):
        LOG.append(("flush",))


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, spi_id, **kwargs):
        self.id = spi_id
        self.config = kwargs

    def write_readinto(self, tx, rx):
        addr = tx[0] & 0x7F
        if tx[0] & 0x80:
            value = REGS.get(addr, 0)
            if addr in _CLEAR_ON_READ:
                REGS[addr] = 0
        else:
            value = 0
            REGS[addr] = (tx[1] << 8) | tx[2]
        rx[0] = 0
        rx[1] = value >> 8
        rx[2] = value & 0xFF
        LOG.append(("spi", bytes(tx)))
