"""Hold a simulator's calls at a gate, so a test kills or stops a process while a call is in
flight by construction rather than by timing.

A slowed answer ("slow" fault) only makes a kill likely to land mid-call: on a busy machine
the test may look too late. A held call waits in the simulator until the test releases it,
however long the test takes to act.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from migrate.sandbox.httpbase import App, Request, Response, Route


class HeldCalls:
    """Calls to ``route`` after the first ``passes`` wait in ``app`` until :meth:`release`.

    The app's own ``before`` hook runs first (authentication, quota, what the app records as
    asked), so a held call is seen exactly as an answered one would be. Use as a context
    manager: leaving it releases the calls and puts the app's hook back.
    """

    def __init__(self, app: App, route: str, *, passes: int = 0, guard: float = 120.0) -> None:
        self.app = app
        self.route = route
        self.passes = passes
        self.guard = guard  # the longest a call is held if nobody releases it: a hang guard
        self._gate = threading.Event()
        self._lock = threading.Lock()
        self._arrived = 0
        self._held = 0
        self._installed = False

    @property
    def held(self) -> int:
        """How many calls have reached the gate so far (released ones included)."""
        with self._lock:
            return self._held

    def install(self) -> HeldCalls:
        unheld = self.app.before

        def before(request: Request, route: Route) -> Response | None:
            early = unheld(request, route)
            if early is None and route.name == self.route:
                with self._lock:
                    self._arrived += 1
                    hold = self._arrived > self.passes
                    if hold:
                        self._held += 1
                if hold:
                    self._gate.wait(self.guard)
            return early

        self.app.before = before  # type: ignore[method-assign]
        self._installed = True
        return self

    def release(self) -> None:
        """Let every held call (and every later one) through; the app's own hook is back."""
        self._gate.set()
        if self._installed:
            del self.app.before
            self._installed = False

    def __enter__(self) -> HeldCalls:
        return self.install()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        self.release()
        return None


class HeldAfter:
    """Every call to any of ``apps`` after the first ``passes`` (counted over all of them, any
    route) waits until :meth:`release`: the process cannot get past that point, nor finish,
    before the test acts on it. Use as a context manager, like :class:`HeldCalls`."""

    def __init__(self, apps: list[App], passes: int, *, guard: float = 120.0) -> None:
        self.apps = apps
        self.passes = passes
        self.guard = guard
        self._gate = threading.Event()
        self._lock = threading.Lock()
        self._arrived = 0
        self._installed: list[App] = []

    def install(self) -> HeldAfter:
        for app in self.apps:
            unheld = app.before

            def before(request: Request, route: Route, unheld: Any = unheld) -> Response | None:
                early = unheld(request, route)
                if early is None:
                    with self._lock:
                        self._arrived += 1
                        hold = self._arrived > self.passes
                    if hold:
                        self._gate.wait(self.guard)
                return early

            app.before = before  # type: ignore[method-assign]
            self._installed.append(app)
        return self

    def release(self) -> None:
        self._gate.set()
        for app in self._installed:
            del app.before
        self._installed = []

    def __enter__(self) -> HeldAfter:
        return self.install()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        self.release()
        return None


def all_answered(app: App) -> bool:
    """Every call ``app`` received has been answered (to a live client or a dead one)."""
    with app.lock:
        return sum(app.statuses.values()) >= sum(app.calls.values())
