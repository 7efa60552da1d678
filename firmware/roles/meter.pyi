from firmware.hal import MeterFrontEnd
from firmware.metering import TaggedCounter
from firmware.roles.common import Points

class MeterRole:
    tagger: TaggedCounter | None
    status_addr: int | None
    def __init__(self, points: Points, *, front_end: MeterFrontEnd, serial: str, unit: int = 1,
                 tagger: TaggedCounter | None = None, status_addr: int | None = None) -> None: ...
    def tick(self) -> None: ...
