"""Stopping on request: one event for the whole process, checked by every worker and every wait.

Ctrl-C reaches only the main thread, as KeyboardInterrupt, and on Windows not even a blocked
one: no OS delivers it to worker threads. So the CLI's Ctrl-C handler also sets :data:`STOP`,
and everything that can keep a thread busy checks it: the HTTP client before each attempt,
while it backs off and between the chunks of a download; the rate budget while it waits for
quota; the upload and download pools before they start the next file. Whoever sees it raises
:class:`Stopped`. Waits never call ``time.sleep`` for long: they wait on an event in short
slices, so a stop (or the main thread's own KeyboardInterrupt) is noticed at once on every OS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

#: Set once a stop is requested (Ctrl-C); cleared by the CLI when a command starts.
STOP = threading.Event()
#: After a stop, how long the pools wait for requests already on the wire, so what they finish
#: is recorded; a worker still busy after that is abandoned (its work is redone next run).
GRACE_SECONDS = 5.0
#: Longest single wait between two looks at the stop event.
POLL_SECONDS = 0.1


class Stopped(KeyboardInterrupt):
    """Raised by a thread that noticed :data:`STOP`: the run was interrupted on purpose.

    A KeyboardInterrupt, so every stage records its run as interrupted (as for Ctrl-C in the
    main thread) and no ``except Exception`` swallows it.
    """

    def __init__(self) -> None:
        super().__init__("stopped on request (Ctrl-C)")


def requested(stop: threading.Event | None = None) -> bool:
    """Whether a stop was requested (of ``stop``, or of the process)."""
    return (stop or STOP).is_set()


def check(stop: threading.Event | None = None) -> None:
    """Raise :class:`Stopped` if a stop was requested."""
    if (stop or STOP).is_set():
        raise Stopped()


def sleep(
    seconds: float,
    *,
    stop: threading.Event | None = None,
    until: threading.Event | None = None,
) -> bool:
    """Wait ``seconds``; raise :class:`Stopped` as soon as a stop is requested.

    Returns True when ``until`` was set before the time was up (a reason to stop waiting that
    is not a stop, e.g. the service was given up on), False when the full time passed.
    """
    stop_event = stop or STOP
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        if stop_event.is_set():
            raise Stopped()
        if until is not None and until.is_set():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        (until or stop_event).wait(min(remaining, POLL_SECONDS))


_abandoned: list[Future[Any]] = []
_abandoned_lock = threading.Lock()


def abandon(futures: Iterable[Future[Any]]) -> None:
    """Note pool jobs left running (past the grace); see :func:`workers_left_running`."""
    running = [future for future in futures if not future.done()]
    if running:
        with _abandoned_lock:
            _abandoned.extend(running)


def workers_left_running() -> bool:
    """Whether an abandoned job is still on the wire.

    Python joins pool threads when the interpreter exits, so an interrupted command that has
    any must leave with ``os._exit`` to end promptly.
    """
    with _abandoned_lock:
        _abandoned[:] = [future for future in _abandoned if not future.done()]
        return bool(_abandoned)
