"""The old all-roles ``layout(role)`` API, over the per-role tables in ``firmware/tables``.

The board does not import this (``firmware.board`` loads one role's table through
``firmware.roles.common.role_table``). It remains only for callers written against the old API
(tests/firmware/test_dcdc_role.py); delete it once they use ``role_table``.
"""

from firmware.roles.common import role_table
from firmware.tables import BASE, ROLES

__all__ = ["BASE", "ROLES", "layout"]


def layout(role):
    """``(size, fixed, table, None)``: ``fixed`` is every register of the boot image as
    ``(address, value)`` pairs; ``table`` the role's compact point table."""
    if role not in ROLES:
        raise ValueError("unknown role: " + str(role))
    mod = role_table(role)
    image = mod.IMAGE
    fixed = tuple((BASE + i, image[2 * i] << 8 | image[2 * i + 1]) for i in range(mod.SIZE))
    return mod.SIZE, fixed, mod.TABLE, None
