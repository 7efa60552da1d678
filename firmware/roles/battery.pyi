from firmware.hal import BatteryStage, Clock
from firmware.roles.common import Points, Reversion

class BatteryRole:
    revert: Reversion
    command_w: int
    def __init__(self, points: Points, *, stage: BatteryStage, clock: Clock, serial: str,
                 unit: int = 1, capacity_wh: int, max_charge_w: int, max_discharge_w: int,
                 soc_min_pct: float, soc_max_pct: float) -> None: ...
    def on_write(self, addr: int, count: int) -> int | None: ...
    def tick(self) -> None: ...
