from collections.abc import Callable

from firmware.modbus.bank import RegisterBank

MODEL_ID: int
MODEL_LEN: int
OFF_CFG_ERR: int
OFF_SEQ: int
OFF_IMP: int
OFF_EXP: int
OFF_TAG: int
TAG_REGS: int

class MeteringError(ValueError): ...

def message(device_id: str, seq: int, import_wh: int, export_wh: int) -> bytes: ...
def hmac_sha256(key: bytes, msg: bytes) -> bytes: ...

class TaggedCounter:
    seq: int
    import_wh: int
    export_wh: int
    tag: bytes
    def __init__(self, key: bytes, device_id: str, *, seq: int = 0,
                 reserve: Callable[[int], object] | None = None, block: int = 4096) -> None: ...
    def update(self, import_wh: int, export_wh: int) -> bytes: ...
    def publish(self, bank: RegisterBank, model_addr: int) -> None: ...

def blank(bank: RegisterBank, model_addr: int, cfg_err: int) -> None: ...
def load_seq(path: str) -> int: ...
def save_seq(path: str, value: int) -> None: ...
