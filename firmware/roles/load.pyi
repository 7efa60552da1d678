from firmware.hal import Clock, LoadStage
from firmware.roles.common import Points, Reversion

APPLIANCE: int
EVSE: int
DEFAULT: int
LIMITED: int

class LoadRole:
    revert: Reversion
    state: int
    def __init__(self, points: Points, *, stage: LoadStage, clock: Clock, serial: str,
                 unit: int = 1, kind: int, max_w: int, max_dis_w: int = 0) -> None: ...
    def on_write(self, addr: int, count: int) -> int | None: ...
    def check_revert(self) -> None: ...
    def tick(self) -> None: ...
