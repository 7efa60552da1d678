from firmware.hal import Clock, DcPort, DcStage
from firmware.roles.common import Points, Reversion

WAIT: int
CV: int
CC_CHARGE: int
CC_DISCHARGE: int
TRIPPED: int
OVER_VOLTAGE: int
UNDER_VOLTAGE: int
OVER_CURRENT: int
REVERTED: int

class DcdcRole:
    revert: Reversion
    state: int
    trip: int
    def __init__(self, points: Points, *, stage: DcStage, clock: Clock, serial: str,
                 unit: int = 1, rated_a_x100: int = 2000, v_nom_x10: int = 3500,
                 v_min_x10: int = 3200, v_max_x10: int = 3800,
                 port: DcPort | None = None) -> None: ...
    def on_write(self, addr: int, count: int) -> int | None: ...
    def check_revert(self) -> None: ...
    def tick(self) -> None: ...
    def measure(self) -> None: ...
