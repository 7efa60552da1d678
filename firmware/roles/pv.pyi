from firmware.hal import Clock, PvStage
from firmware.roles.common import Points, Reversion

class PvRole:
    lim_revert: Reversion
    set_revert: Reversion
    limit_w: int | None
    def __init__(self, points: Points, *, stage: PvStage, clock: Clock, serial: str,
                 unit: int = 1, rating_w: int) -> None: ...
    def on_write(self, addr: int, count: int) -> int | None: ...
    def tick(self) -> None: ...
