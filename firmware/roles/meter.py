"""Meter role: SunSpec models 1 and 203 over a metering front end, plus the tagged counters of
vendor model 64210 when the meter holds a key.

A single-phase meter at the grid connection point. Sign convention as SunSpec meters and
docs/architecture.md: ``W`` + = import from the grid. Energy comes from the front end's own
accumulators (``TotWhImp``/``TotWhExp``, Wh, scale factor 0): a metering IC integrates far faster
than any poll, so the firmware never integrates sampled power itself. ``W`` is int16 at scale
factor 0 and saturates at ±32767 W, beyond any single home connection.

Tags: given a ``tagger`` (``firmware.metering.TaggedCounter``, keyed at flash time), every tick
tags the very counters it published in 203 and writes seq, counters and tag into model 64210 at
``status_addr`` (its ID register; by default where the point table places 64210), so a reading
and its tag always come from the same sample. Without a tagger 64210 stays "not implemented".
"""

from firmware.roles.common import clamp, fill_common

_STATUS_MODEL = 64210


class MeterRole:
    """Fills a meter's registers from ``front_end`` (see firmware/hal)."""

    def __init__(self, points, *, front_end, serial, unit=1, tagger=None, status_addr=None):
        self._p = points
        self._fe = front_end
        self.tagger = tagger
        if tagger is not None and status_addr is None:
            status_addr = points.addr(_STATUS_MODEL, "ID")
        self.status_addr = status_addr
        points.blank()
        fill_common(points, role="meter", serial=serial, unit=unit)
        points.put(203, "A_SF", -2)
        points.put(203, "V_SF", -1)
        points.put(203, "Hz_SF", -2)
        points.put(203, "W_SF", 0)
        points.put(203, "TotWh_SF", 0)
        points.put(203, "Evt", 0)
        self.tick()

    def tick(self):
        """Publish one sample, the energy counters and (with a tagger) their fresh tag."""
        p = self._p
        w, v_x10, a_x100, hz_x100 = self._fe.sample()
        imp, exp = self._fe.energy_wh()
        w = clamp(w, -32767, 32767)
        a_x100 = clamp(a_x100, -32767, 32767)
        p.put(203, "W", w)
        p.put(203, "WphA", w)
        p.put(203, "A", a_x100)
        p.put(203, "AphA", a_x100)
        p.put(203, "PhV", v_x10)
        p.put(203, "PhVphA", v_x10)
        p.put(203, "Hz", hz_x100)
        p.put(203, "TotWhImp", imp & 0xFFFFFFFF)
        p.put(203, "TotWhExp", exp & 0xFFFFFFFF)
        tagger = self.tagger
        if tagger is not None:
            tagger.update(imp, exp)
            tagger.publish(p.bank, self.status_addr)
