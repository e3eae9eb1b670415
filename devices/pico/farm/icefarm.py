"""iCEFARM's Socket.IO side: client sockets, queued sessions, ``request`` frames, events.

What the published client (``icefarm`` 0.1.16, ``PulseCountClient`` / ``VarMaxClient``) speaks,
read from its code (see protocols/pico.md): it connects with ``auth = {"client_id": name}``;
the server sends one event name, ``event``, whose data is a JSON *string*
``{"serial": <serial or "meta">, "contents": [{"event": <name>, ...}]}``; the client sends
``request`` with msgpack bytes ``{"serial": <serial or list>, "event": "evaluate",
"contents": {"files": {<id>: <bytes>}, "batch_id": <uuid>}}``.

Which events a process sends depends on its role, so a client gets each event once although
it holds sockets to the control and to every worker: a **worker** sends ``initialized`` and
``results`` of its boards, a **control** ``reservation end``, ``failure``, ``reservation ending
soon`` and ``devices_available``; a daemon that is both sends all of them.

``initialized`` must reach the client after its worker socket connected *and* after it started
waiting (the client sets what it waits for only after connecting every worker socket, and an
early ``initialized`` is lost there): it is sent when the socket connects and repeated a few
times over the next seconds (:data:`INITIALIZED_REPEATS`); repeats are harmless to the client.

Nothing a client queued is lost silently: a ``request`` that cannot be queued (unknown board,
not the client's reservation, a bitstream of the wrong size, a full queue) is answered with a
``results`` event that carries the evaluation ids with ``null`` values and a ``failed`` list
``[[id, reason]]``, and is counted by reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

from radlogger.options import by_reason

from .errors import FarmError
from .sessions import Sessions

__all__ = ["IcefarmSockets", "INITIALIZED_REPEATS", "NAMES"]

log = logging.getLogger(__name__)

#: seconds after a socket connects (or a board is reserved) at which ``initialized`` is sent
INITIALIZED_REPEATS = (0.0, 0.3, 1.0, 2.5)
#: radloggerd event -> iCEFARM event name
NAMES = {"reservation_end": "reservation end", "failure": "failure",
         "reservation_ending": "reservation ending soon", "devices_available": "devices_available",
         "results": "results"}
_WORKER_EVENTS = frozenset({"results"})
_CONTROL_EVENTS = frozenset({"reservation_end", "failure", "reservation_ending",
                             "devices_available"})


def _message(serial: str, contents: list[dict[str, Any]]) -> str:
    return json.dumps({"serial": serial, "contents": contents})


def results_contents(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """A radloggerd ``results`` event as iCEFARM ``results`` contents, one per batch.

    Pulse counts go as strings (iCEFARM's parser returns the regex group), variance fitness as
    numbers; failed evaluations carry ``null`` and appear in ``failed`` with the reason."""
    batches: dict[str, str] = ev.get("batches") or {}
    by_batch: dict[str, dict[str, Any]] = {}
    pulse = ev.get("kind", "pulsecount") != "variance"
    for eval_id, value in ev.get("results", ()):
        batch = batches.get(str(eval_id))
        if batch is not None:
            c = by_batch.setdefault(batch, {"event": "results", "results": [], "failed": [],
                                            "batch_id": batch})
            c["results"].append([eval_id, str(int(value)) if pulse else float(value)])
    for eval_id, reason in ev.get("failed", ()):
        batch = batches.get(str(eval_id))
        if batch is not None:
            c = by_batch.setdefault(batch, {"event": "results", "results": [], "failed": [],
                                            "batch_id": batch})
            c["results"].append([eval_id, None])
            c["failed"].append([eval_id, reason])
    return list(by_batch.values())


class IcefarmSockets:
    """The Socket.IO server of one farm process (control, worker or both)."""

    def __init__(self, farm: Any, control: bool, worker: bool, sessions: Sessions) -> None:
        self.farm = farm
        self.control = control
        self.worker = worker
        self.sessions = sessions
        self.forward = (_CONTROL_EVENTS if control else frozenset()) | (
            _WORKER_EVENTS if worker else frozenset())
        self.sio: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bad_requests: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.evaluations = 0

    # ---------------------------------------------------------------- wiring
    def attach(self, server: Any, buffer_bytes: int) -> None:
        """Socket.IO on the farm's :class:`radlogger.web.WebServer` (same port and loop)."""
        sio = server.attach_socketio(max_http_buffer_size=buffer_bytes, ping_timeout=60,
                                     ping_interval=25)
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        sio.on("request", self._request)
        self.sio = sio

        async def bind(app: Any) -> None:
            self.loop = asyncio.get_running_loop()

        server.app.on_startup.append(bind)
        self.farm.hub.listeners.append(self.on_event)

    def counters(self) -> dict[str, int | float]:
        return {"requests": self.requests, "evaluations_queued": self.evaluations,
                **by_reason("bad_requests", self.bad_requests), **self.sessions.counters()}

    # ---------------------------------------------------------------- events out (any thread)
    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event", "")
        if kind not in self.forward or (kind == "reservation_end"
                                        and ev.get("reason") == "failure"):
            return  # a failed board's clients get ``failure`` alone, as from iCEFARM
        if kind == "devices_available":
            msg = _message("meta", [{"event": "devices_available",
                                     "amount": int(ev.get("available",
                                                          len(self.farm.db.available())))}])
            for client in self.sessions.clients():
                self.send(client, msg)
            return
        if kind == "results":
            contents = results_contents(ev)
            if not contents:
                return  # radloggerd's own API evaluations: they go by long-poll only
        else:
            contents = [{"event": NAMES[kind]}]
        self.send(ev["client"], _message(ev["serial"], contents), create=True)

    def send(self, client: str, message: str, create: bool = False) -> None:
        if self.sessions.push(client, message, create=create):
            self._kick(client)

    def initialized(self, client: str, serials: list[str]) -> None:
        """``initialized`` for ``serials`` now and a few times again (see the module doc)."""
        loop = self.loop
        if not serials or loop is None:
            return
        msgs = [_message(s, [{"event": "initialized"}]) for s in serials]

        def later() -> None:
            for delay in INITIALIZED_REPEATS:
                loop.call_later(delay, self._push_all, client, msgs)

        try:
            loop.call_soon_threadsafe(later)
        except RuntimeError:
            pass  # the loop is closed: stopping

    def _push_all(self, client: str, msgs: list[str]) -> None:
        for m in msgs:
            self.sessions.push(client, m, create=True)
        self._flush_soon(client)

    def _kick(self, client: str) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._flush_soon, client)
        except RuntimeError:
            pass

    def _flush_soon(self, client: str) -> None:
        asyncio.ensure_future(self._flush(client))

    async def _flush(self, client: str) -> None:
        sid, messages = self.sessions.take(client)
        if sid is None:
            return
        for i, m in enumerate(messages):
            try:
                await self.sio.emit("event", m, to=sid)
            except Exception:  # noqa: BLE001 - the socket went; the session keeps the rest
                self.sessions.requeue(client, messages[i:])
                return

    # ---------------------------------------------------------------- sockets (the loop)
    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        client = auth.get("client_id") if isinstance(auth, dict) else None
        if not isinstance(client, str) or not client or len(client) > 200:
            self.bad_requests["no_client_id"] += 1
            return False
        if not self.sessions.connect(sid, client):
            log.warning("farm %s: Socket.IO connection of %s refused: %d sessions (the cap)",
                        self.farm.name, client, len(self.sessions))
            return False
        if self.worker:
            serials = [s for s, st in list(self.farm.states.items()) if st.client == client]
            self.initialized(client, serials)
        self._flush_soon(client)
        return True

    async def _disconnect(self, sid: str, *reason: Any) -> None:
        self.sessions.disconnect(sid)

    async def _request(self, sid: str, data: Any = None) -> None:
        client = self.sessions.client_of(sid)
        self.requests += 1
        if client is None:
            self.bad_requests["no_session"] += 1
            return
        loop = asyncio.get_running_loop()
        # unpacking a batch of bitstreams and queueing it is work: off the loop
        await loop.run_in_executor(None, self.handle_request, client, data)

    def handle_request(self, client: str, data: Any) -> None:
        import msgpack

        try:
            req = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else None
        except Exception:  # noqa: BLE001 - any malformed frame is counted, never raised
            req = None
        if not isinstance(req, dict):
            self.bad_requests["malformed"] += 1
            return
        serial, event, contents = req.get("serial"), req.get("event"), req.get("contents")
        serials = serial if isinstance(serial, list) else [serial]
        if (not serials or not all(isinstance(s, str) and s for s in serials)
                or not isinstance(contents, dict)):
            self.bad_requests["malformed"] += 1
            return
        if event != "evaluate":
            self.bad_requests["unknown_method"] += 1
            return
        files, batch = contents.get("files"), contents.get("batch_id")
        if not isinstance(files, dict) or not isinstance(batch, str) or not files:
            self.bad_requests["malformed"] += 1
            return
        items = list(files.items())
        for s in dict.fromkeys(serials):
            self._evaluate(client, s, items, batch)

    def _evaluate(self, client: str, serial: str, items: list[tuple[Any, Any]],
                  batch: str) -> None:
        state = self.farm.states.get(serial)
        try:
            if state is None or state.client != client:
                raise FarmError(f"client {client} holds no reservation of board {serial} "
                                "on this worker")
            state.submit(items, batch)
            self.evaluations += len(items)
        except FarmError as exc:
            reason = type(exc).__name__.lower()
            self.bad_requests[reason] += 1
            log.info("farm %s: evaluate on %s for %s refused: %s", self.farm.name, serial,
                     client, exc)
            ids = [str(i) for i, _ in items]
            kind = state.kind if state is not None else "pulsecount"
            self.on_event({"event": "results", "client": client, "serial": serial,
                           "kind": kind, "results": [],
                           "failed": [[i, f"refused: {exc}"] for i in ids],
                           "batches": dict.fromkeys(ids, batch)})
