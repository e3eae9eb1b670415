"""Work in child processes: one mechanism for endpoint pools and isolated chains.

The correlator backend's central rule (``shared/protocols/widar.md``): the input stage never
runs new, fragile processing in its own process.  A worker runs a chain of endpoint stages
(``type = isolated``: lag_normalize, lag_fft, integrate) or one stage N times over
(``type = pool``: fft on every core); a crash or hang is detected, counted and restarted while
the input stage keeps receiving and counts what it could not hand over.

* :mod:`.chain`      the stages, run through the endpoint base's error policy (every worker);
* :mod:`.messages`   control events and slot references (measurements: :mod:`radlogger.wire`);
* :mod:`.shm`        shared-memory slots for what exceeds a datagram;
* :mod:`.feeder`     the non-blocking sending end, counting what it cannot hand over;
* :mod:`.channel`    the parent's end: datagram sockets + slot rings;
* :mod:`.supervisor` :class:`WorkerProcess`: spawn, feed, heartbeats, crash/hang, restart;
* :mod:`.child`      the worker process's main loop;
* :mod:`.pool`       ``type = pool``: dispatch, reorder buffer, thread or process workers.

Generic: stages are any :class:`radlogger.endpoint.Endpoint` classes, named by entry-point
kind or ``module:Class`` (:func:`radlogger.plugins.load_class`); nothing is pickled.  The
processes belong to the endpoint that made them (:class:`WorkerHost`); control events reach
those of a pipeline through :func:`broadcast_control`.
"""

from .chain import Chain, StageSpec, load_stage
from .messages import CONTROL_CODES, WireError
from .supervisor import WorkerError, WorkerHost, WorkerProcess, broadcast_control

__all__ = ["WorkerProcess", "WorkerError", "WorkerHost", "StageSpec", "Chain", "load_stage",
           "broadcast_control", "CONTROL_CODES", "WireError"]
