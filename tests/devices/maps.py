"""The devices of the issue's table, as register maps built by pysunspec2 (see ``served.py``).

Values are given by point name, raw as the device holds them (with their scale factors); the
layout and encoding are pysunspec2's. Each builder returns the models in chain order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.devices.served import COMMON, DER_1547, Values, device_file, model

PUBLISHED_1547: dict[int, Values] = {
    701: {"ACType": 2, "St": 1},
    702: {"NorOpCatRtg": 1, "AbnOpCatRtg": 2},
    704: {"WMaxLimPctEna": 0, "WMaxLimPct": 100, "WMaxLimPctRvrt": 100, "WMaxLimPctEnaRvrt": 0,
          "WMaxLimPctRvrtTms": 0, "WMaxLimPct_SF": 0},
}
"""What turns pysunspec2's draft-era DER image into one with the published 1547 values: the
enumerations the published models define, and the output limit with its scale factor."""

STORAGE_1547: dict[int, Values] = {
    701: {"ACType": 2, "St": 1, "W": -2000, "VA": 2000, "Var": 0},
    702: {"NorOpCatRtg": 1, "AbnOpCatRtg": 2, "WChaRteMaxRtg": 5000, "WDisChaRteMaxRtg": 4000},
    704: {"WSetEna": 0, "WSetMod": 1, "WSet": 0, "WSetRvrt": 0, "WSetEnaRvrt": 0,
          "WSetRvrtTms": 0, "WSet_SF": 0},
    713: {"WHRtg": 10000, "WHAvail": 5000, "SoC": 500, "SoH": 1000, "Sta": 0, "WH_SF": 0,
          "Pct_SF": -1},
}
"""pysunspec2's DER image as a storage DER without 124: charging at 2 kW (701 W < 0), half
full, commanded through 704 ``WSet``."""


def der_1547(tmp: Path, changes: dict[int, Values] | None = None) -> list[list[int]]:
    """pysunspec2's DER image (as shipped when ``changes`` is None), as one block."""
    return [device_file(DER_1547, changes, tmp)]


def inverter(measure: int = 103, *, w: Any = 2500, w_sf: int | None = 0,
             limit_sf: int | None = 0, modules: int = 2) -> list[list[int]]:
    """A legacy inverter: 1, ``measure`` (101–103 with scale factors, 111–113 float), 120, 121,
    122, 123 and 160 with ``modules`` MPPT modules."""
    if measure < 110:
        measured: Values = {"A": 110, "AphA": 37, "AphB": 37, "AphC": 36, "A_SF": -1,
                            "PhVphA": 2301, "PhVphB": 2302, "PhVphC": 2299, "V_SF": -1,
                            "W": w, "W_SF": w_sf, "Hz": 5001, "Hz_SF": -2, "WH": 1234567,
                            "WH_SF": 0, "TmpCab": 350, "Tmp_SF": -1, "St": 4, "Evt1": 0,
                            "Evt2": 0}
    else:
        measured = {"A": 11.0, "AphA": 3.7, "AphB": 3.7, "AphC": 3.6, "PhVphA": 230.1,
                    "PhVphB": 230.2, "PhVphC": 229.9, "W": w, "Hz": 50.01, "WH": 1234567.0,
                    "TmpCab": 35.0, "St": 4, "Evt1": 0, "Evt2": 0}
    return [
        model(1, COMMON),
        model(measure, measured),
        model(120, {"DERTyp": 4, "WRtg": 5000, "WRtg_SF": 0, "VARtg": 5000, "VARtg_SF": 0,
                    "ARtg": 220, "ARtg_SF": -1}),
        model(121, {"WMax": 5000, "WMax_SF": 0, "VRef": 230, "VRef_SF": 0, "VRefOfs": 0,
                    "VRefOfs_SF": 0}),
        model(122, {"PVConn": 7, "StorConn": 0, "ECPConn": 1}),
        model(123, {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_RvrtTms": 0, "WMaxLim_Ena": 0,
                    "OutPFSet_Ena": 0, "VArPct_Ena": 0, "WMaxLimPct_SF": limit_sf,
                    "OutPFSet_SF": -3}),
        model(160, {"DCA_SF": -2, "DCV_SF": -1, "DCW_SF": 0, "DCWH_SF": 0, "N": modules,
                    "module": [{"ID": i + 1, "IDStr": f"string {i + 1}", "DCA": 500,
                                "DCV": 3500, "DCW": 1250} for i in range(modules)]}),
    ]


def meter(measure: int = 203, *, w: Any = -1500, imported: Any = 5000,
          exported: Any = 700) -> list[list[int]]:
    """A meter: 1 and ``measure`` (201–204 with scale factors, 211–214 float)."""
    if measure < 210:
        values: Values = {"A": 65, "A_SF": -1, "PhV": 2301, "V_SF": -1, "Hz": 5001, "Hz_SF": -2,
                          "W": w, "W_SF": 0, "TotWhImp": imported, "TotWhExp": exported,
                          "TotWh_SF": 0, "Evt": 0}
    else:
        values = {"A": 6.5, "PhV": 230.1, "Hz": 50.01, "W": w, "TotWhImp": imported,
                  "TotWhExp": exported, "Evt": 0}
    return [model(1, {**COMMON, "Md": "Meter-3", "SN": "MT-7"}), model(measure, values)]


def storage_124() -> list[list[int]]:
    """A battery with 802 and 124 (the storage models our own firmware serves too)."""
    return [
        model(1, {**COMMON, "Md": "Battery-10"}),
        model(802, {"AHRtg": 200, "WHRtg": 10000, "WChaRteMax": 3000, "WDisChaRteMax": 2500,
                    "SoC": 55, "LocRemCtl": 0, "AlmRst": 0, "Typ": 4, "State": 3, "V": 480,
                    "A": 0, "W": 0, "SetOp": 1, "SetInvState": 1, "Evt1": 0, "Evt2": 0,
                    "EvtVnd1": 0, "EvtVnd2": 0, "AHRtg_SF": 0, "WHRtg_SF": 0,
                    "WChaDisChaMax_SF": 0, "SoC_SF": 0, "V_SF": -1, "CellV_SF": -3, "A_SF": -1,
                    "AMax_SF": 0, "W_SF": 0}),
        model(124, {"WChaMax": 3000, "WChaGra": 100, "WDisChaGra": 100, "StorCtl_Mod": 0,
                    "OutWRte": 0, "InWRte": 0, "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": 0,
                    "InOutWRte_RmpTms": 0, "WChaMax_SF": 0, "WChaDisChaGra_SF": 0,
                    "InOutWRte_SF": -2}),
    ]
