"""Which pico drivers belong to which farm: the one link between the two kinds of device.

Drivers and the farm are separate devices of one pipeline (each with its own thread and
lifecycle), built independently from the configuration.  A driver with ``farm = NAME`` joins
group ``NAME`` of kind :data:`BOARDS` in its pipeline's registries when the pipeline starts it
(``attach``) and leaves when it stops (``detach``); the farm named ``NAME`` looks its boards up
there.  Never in a constructor: the configuration loader and a reload build drivers that never
run, and the farm must only ever see the running ones.
"""

from __future__ import annotations

from typing import Any

from radlogger.registries import Registries

__all__ = ["BOARDS", "boards"]

#: registry kind of pico drivers attached to a farm; the group is the farm's device name
BOARDS = "pico_farm.boards"


def boards(registries: Registries, farm: str) -> list[Any]:
    """The running drivers attached to ``farm``, sorted by device name."""
    return registries.members(BOARDS, farm)
