"""SunSpec register layouts built from pysunspec2's model definitions (read as data)."""

from protocols.sunspec.devices import ROLE_MODELS, DeviceMap, ModelBlock
from protocols.sunspec.models import ModelDef, ModelError, PointDef, load_model
from protocols.sunspec.points import PointValueError, apply_sf, decode, encode, to_raw

__all__ = [
    "ROLE_MODELS", "DeviceMap", "ModelBlock", "ModelDef", "ModelError", "PointDef",
    "PointValueError", "apply_sf", "decode", "encode", "load_model", "to_raw",
]
