from firmware.modbus.bank import RegisterBank

class TcpServer:
    bank: RegisterBank
    unit: int | None
    closed: bool
    def __init__(self, bank: RegisterBank, unit: int | None = None) -> None: ...
    def feed(self, data: bytes) -> bytes: ...
