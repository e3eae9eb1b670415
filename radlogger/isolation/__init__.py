"""Process isolation: chains of endpoints in child processes, fed over Unix datagram sockets.

The correlator backend's central rule (``shared/protocols/widar.md``): the input stage never
runs new, fragile processing in its own process.  Lag processing runs in pipeline processes;
a crash or hang there is detected, counted and restarted while the input stage keeps
receiving and counts what it could not hand over.

* :mod:`.messages` control events and slot references (measurements: :mod:`radlogger.wire`);
* :mod:`.shm`    shared-memory slots for what exceeds a datagram;
* :mod:`.parent` :class:`PipelineProcess`: spawn, feed, supervise, restart (input stage side);
* :mod:`.child`  the pipeline process's main loop.

Generic: stages are any :class:`radlogger.endpoint.Endpoint` classes, named by entry-point
kind or ``module:Class``; nothing here knows about WIDAR.
"""

from .messages import CONTROL_CODES, WireError
from .parent import IsolationError, PipelineProcess, StageSpec, broadcast_control

__all__ = ["PipelineProcess", "StageSpec", "IsolationError", "broadcast_control",
           "CONTROL_CODES", "WireError"]
