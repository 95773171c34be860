"""Procore's rate limits as one budget shared by every API call of a run.

Procore counts requests in two windows (hourly and a 10-second spike window) and reports, on
every response, ``X-Rate-Limit-Limit`` / ``-Remaining`` / ``-Reset`` for whichever window is
closer to running out. :class:`RateBudget` plugs into :class:`~migrate.clients.http.HttpClient`
as a request hook: it reads those headers after every response and, before every attempt,
waits just long enough that no request is refused with 429, while keeping the quota busy.

How it decides, and why:

- **Certain floor.** Remaining quota only grows by itself (old requests leave a window), and
  only our own requests use it up. So the latest report, minus every request of ours that it may
  not have counted yet (sent later, or still in flight when it was sent), is a safe floor for
  every window at once: the report is the smallest of them.
- **When that floor runs out**, waiting for ``X-Rate-Limit-Reset`` is safe but slow: the header
  is whole Unix seconds, rounded up, which on a short window wastes a large share of the quota.
  So the budget also models each window as the sliding log Procore's sandbox uses. Every report
  bounds the window's length from above (:meth:`_learn_span`): by the reset minus the send time
  of the oldest request the window can still hold, and, free of the reset's rounding, by the
  time since the latest request of ours the window no longer holds (its count says how many
  of our latest it still holds). A request of ours leaves the window at the latest that long
  after its response arrived. That tells when slots free up, to a few milliseconds.
- **The model only for a window seen to slide.** A window that resets all at once, filled in a
  burst just after its reset, fits a sliding model a little shorter than the time since our
  previous burst, and that model would free its slots before the real reset (a 429). So the
  model admits requests only once the window was seen to slide (:meth:`_slid`): two reports
  naming the same reset, the later counting fewer than the earlier one's requests plus ours
  surely counted in between, i.e. some left while the reset stayed put. Other clients'
  requests only add to a count, so they never fake it. Until then the window is spent down
  to its certain floor, then its reset is waited for.
- **Spending, and never stalling.** Room is spent at once, not spread: the quota of a window is
  the same whether spent early or late, so spreading only risks ending the run a window later
  and, on an hourly window, caps the rate at the hourly average (1 request/s at 3 600/h)
  however much spike room is left (issue 16). One exception: until the shortest window is
  seen to slide (or found fixed, below), its last tenth of free slots (at least 5) is spread
  until its reset, so requests keep going out as the first ones leave (which shows that it
  slides, and how long it is, within the first window) or across a fixed window's reset
  (which shows that it does not). Against fixed windows, spending the room at once and then
  waiting for the reset loses nothing to the reset being rounded up to whole seconds.
- **Telling fixed from sliding.** A server that counts fewer requests than we surely sent
  within the window's shortest possible length cannot be sliding (no one else's requests make
  the count smaller): the model is set aside for good. A count higher than the model allows
  (someone else spends the quota) sets it aside for two lengths first. Each report checks
  the model that way.
- **Threads.** Uploads run several at a time on one budget. Decisions and the bookkeeping of
  requests in flight happen under one lock, so two threads never both spend the last slot.
- A 429 is recorded, and every thread holds off until its ``Retry-After`` is over or, when it
  carries none (Procore's pages promise ``Retry-After`` only with a 503), until the
  ``X-Rate-Limit-Reset`` it reports (one second without either); the reported window counts as
  empty until then. HttpClient retries the request after the same wait, floored and capped.
- Which window the headers name is "the limit your app is most likely to exceed first":
  fewer requests left, or the smaller share of its limit left. A report naming the hourly
  window is a floor for the spike window only scaled to its share (under the second reading
  a fresh spike window yields to an hourly one barely begun, and near the hourly reset a
  spike window with 2 of 20 left yields to an hourly one with 9 of 100). Tests run the
  budget under both readings, sliding and fixed windows, with and without ``Retry-After``
  (:mod:`migrate.sandbox.procore_server` documents each).
- **Stopping.** A wait for quota can last until the hourly window resets. It is taken in short
  slices, so a stop request (Ctrl-C, :mod:`migrate.stopping`) ends it at once with
  :class:`~migrate.stopping.Stopped`, and an event registered with :meth:`stop_waiting_when`
  (the API client giving Procore up) releases the waiting thread to meet that error.
- **Readings.** After :meth:`RateBudget.record_readings` every answer is kept as a
  :class:`~migrate.ratereading.Reading` (method, path with ids folded, status, the three
  headers); load stores them so the report charts the quota in the windows Procore counts.
- **A quota shared with other processes** (a portfolio of projects, issue 18): a
  :class:`SpendStore` plugged in decides when each request may go, for every process at once
  (:mod:`migrate.clients.sharedquota`'s SQLite ledger); this budget's own model, which sees
  only its process's requests, is then not used. 429 holds, stopping and counters stay here.

Both windows are learned separately, keyed by their ``X-Rate-Limit-Limit`` value (two windows
with the same limit cannot be told apart and share one entry; the model check then sets that
model aside).
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from migrate import stopping
from migrate.ratereading import Reading as Reading  # re-exported: what take_readings returns

log = logging.getLogger("migrate.ratebudget")

#: Completed requests examined beyond the ``n`` needed when bounding a window's length;
#: covers requests that finished out of order.
_REORDER_SLACK = 64
#: Shortest window length the sliding-window model is used for (see ``_modelled``).
_MIN_MODEL_SPAN = 1.0
#: Waits this long or longer are logged, so a quiet run is explained.
_LOG_WAITS_FROM = 10.0
#: How long a thread waits before looking again while a probe's answer is outstanding.
_POLL_SECONDS = 0.02


class ResponseLike(Protocol):
    """What the budget reads from a response: its status and headers."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class SpendStore(Protocol):
    """A quota shared with other processes (issue 18): with one plugged in, it decides when a
    request may go, in place of this budget's own windows; the budget still waits (in stoppable
    slices), holds every thread after a 429 and keeps its counters.

    Each call is short (no long blocking): :meth:`claim` answers at once how long to wait.
    """

    def claim(self, now: float) -> tuple[float, object]:
        """``(0, token)`` after recording one request going out now, or ``(seconds to wait,
        None)`` with nothing recorded when the shared quota has no room."""
        ...

    def settle(self, token: object, now: float, status: int | None) -> None:
        """The claimed request was answered with ``status`` (None: no answer came)."""
        ...

    def hold_until(self, until: float) -> None:
        """A 429 asked to wait until ``until`` (Unix seconds): every process holds off."""
        ...


@dataclass
class _Sent:
    """One attempt released by the budget."""

    seq: int
    sent_at: float  # wall clock, never decreasing
    sent_mono: float
    in_flight_before: int  # others awaiting an answer when this one went out
    done_at: float | None = None
    # True: the server counted it. None: unknown (no answer came). 429s are dropped: a refused
    # request takes no slot.
    counted: bool | None = True
    method: str = ""
    endpoint: str = ""  # the URL's path, ids folded to ":id" (never the query: it may be secret)
    spend_token: object = None  # the shared spend store's record of it (see SpendStore)


@dataclass
class _Report:
    """What one response said about one window."""

    limit: int
    remaining: int
    reset: float  # Unix seconds
    seq: int  # of the request it answered
    in_flight_before: int
    sent_at: float | None = None  # wall clock of the request it answered, when ours
    done_at: float | None = None


@dataclass
class _Window:
    """What the budget knows about one of Procore's windows (keyed by its limit)."""

    limit: int
    last: _Report
    span: float | None = None  # upper bound of the window's length, from the resets seen
    shortest: float = 0.0  # lower bound of the window's length
    model_off_until: float = 0.0  # wall clock; math.inf once a 429 proved the model wrong
    model_failures: int = 0
    # Seen to slide: requests left it while its reset stayed the same (see _slid).
    sliding: bool = False
    # The report the next ones are compared with to see that; one answered before they went
    # out, so that they were surely counted after it.
    anchor: _Report | None = None


class RateBudget:
    """Paces requests to spend Procore's quota fully without a 429. Thread-safe.

    ``clock`` (monotonic) spaces calls and times waits, ``wall`` (Unix seconds) compares with
    ``X-Rate-Limit-Reset``, ``sleep`` waits. ``safety`` seconds are added to every wait that
    rests on the server's clock; ``reserve_fraction`` of each window's limit is left unused
    (1 % by default, none below a limit of 100), so a person can still use Procore while a
    migration runs.

    Counters: ``requests`` released, ``rate_limited`` (429s seen), ``waited_seconds`` (summed
    over threads), and ``last_limit`` / ``last_remaining`` / ``last_reset`` as last reported.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        safety: float = 0.02,
        *,
        reserve_fraction: float = 0.01,
        stale_after: float = 600.0,
        stop: threading.Event | None = None,
        spend_store: SpendStore | None = None,
    ) -> None:
        self._clock = clock
        #: Shared with other processes: decides when a request may go (see SpendStore).
        self._spend_store = spend_store
        self._stop = stop or stopping.STOP
        self._release_when: list[threading.Event] = []
        self._wall = wall
        self._sleep = sleep
        self.safety = safety
        self.reserve_fraction = reserve_fraction
        #: A request without an answer after this long (its thread died) stops counting as in
        #: flight; it is assumed to have been counted.
        self.stale_after = stale_after
        # With the real sleep, waiting threads park on the condition and wake when an answer
        # arrives; an injected sleep (tests with a fake clock) is called instead.
        self._cond = threading.Condition(threading.Lock())
        self._use_condition = sleep is time.sleep
        self._local = threading.local()

        self._seq = 0
        self._in_flight: dict[int, _Sent] = {}
        self._done: list[_Sent] = []  # answered requests, in order of done_at
        self._last_wall = -math.inf
        self._last_sent_mono: float | None = None
        self._windows: dict[int, _Window] = {}
        self._latest: _Report | None = None
        self._responses = 0
        self._blocked_until = -math.inf  # wall clock

        self.requests = 0
        self.waited_seconds = 0.0
        self.rate_limited = 0
        self.last_limit: int | None = None
        self.last_remaining: int | None = None
        self.last_reset: float | None = None
        self._readings: _ReadingLog | None = None

    def record_readings(self) -> None:
        """Keep a :class:`Reading` of every answer from now on (load stores them for the report)."""
        with self._cond:
            if self._readings is None:
                self._readings = _ReadingLog()

    def take_readings(self) -> list[Reading]:
        """The readings kept since the last call (oldest answer first), forgetting them."""
        with self._cond:
            if self._readings is None:
                return []
            taken, self._readings = self._readings, _ReadingLog()
        return taken.readings()

    def stop_waiting_when(self, event: threading.Event) -> None:
        """Let a thread waiting for quota go (uncounted) once ``event`` is set.

        The client registers its "service given up" event, so no thread keeps waiting for
        quota it will never use; the caller then raises its own error.
        """
        with self._cond:
            self._release_when.append(event)

    # -- the RequestHook protocol ------------------------------------------------------------
    def before_request(self, method: str, url: str) -> None:
        """Wait until a request can go out without exceeding any window, then count it.

        Raises :class:`~migrate.stopping.Stopped` once a stop is requested; returns without
        counting the request once an event given to :meth:`stop_waiting_when` is set.
        """
        logged = False
        with self._cond:
            self._close_abandoned()
            while True:
                stopping.check(self._stop)
                if any(event.is_set() for event in self._release_when):
                    return
                now, mono = self._now(), self._clock()
                if self._spend_store is None:
                    wait = self._wait_needed(now, mono)
                    token = None
                else:
                    wait, token = self._shared_wait(now)
                if wait <= 0:
                    self._release(now, mono, method, url)
                    self._local.entry.spend_token = token
                    return
                if wait >= _LOG_WAITS_FROM and not logged:
                    logged = True
                    log.info(
                        "Procore's rate limit is nearly used up (%s left of %s); waiting "
                        "%.0f s before the next request.",
                        self.last_remaining,
                        self.last_limit,
                        wait,
                    )
                if self._use_condition:
                    started = self._clock()
                    # In slices, so a stop is noticed while waiting for a window to reset.
                    self._cond.wait(min(wait, stopping.POLL_SECONDS))
                    self.waited_seconds += max(0.0, self._clock() - started)
                else:
                    self.waited_seconds += wait
                    self._cond.release()
                    try:
                        self._sleep(wait)
                    finally:
                        self._cond.acquire()

    def after_response(self, response: ResponseLike) -> None:
        """Read the rate-limit headers of any response (errors and 429s included)."""
        status = response.status_code
        headers = response.headers
        with self._cond:
            now = self._now()
            self._responses += 1
            entry: _Sent | None = getattr(self._local, "entry", None)
            self._local.entry = None
            if entry is not None:
                self._in_flight.pop(entry.seq, None)
                entry.done_at = now
                self._settle_shared(entry, now, status)
                if status == 429:
                    entry.counted = False
                else:
                    self._done.append(entry)
            report = _parse(headers)
            if self._readings is not None and entry is not None:
                self._readings.add(entry, now, status, report)
            if status == 429:
                self._on_429(headers, report, now)
            if report is not None:
                limit, remaining, reset = report
                self.last_limit, self.last_remaining, self.last_reset = limit, remaining, reset
                # Trust the reported remaining even on a 429: a real quota refusal says 0, and
                # a 429 with quota left (a transient refusal) is governed by its Retry-After
                # alone, not by waiting out the whole window.
                self._observe(limit, remaining, reset, entry, status, now)
            self._trim()
            self._cond.notify_all()

    # -- reporting ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Plain counters for run summaries and benchmarks."""
        with self._cond:
            return {
                "requests": self.requests,
                "waited_seconds": round(self.waited_seconds, 3),
                "rate_limited": self.rate_limited,
                "last": {
                    "limit": self.last_limit,
                    "remaining": self.last_remaining,
                    "reset": self.last_reset,
                },
                "windows": {
                    str(w.limit): {
                        "remaining": w.last.remaining,
                        "reset": w.last.reset,
                        "span_seconds": None if w.span is None else round(w.span, 3),
                        "model": self._modelled(w, self._now()),
                        "sliding": w.sliding,
                    }
                    for w in sorted(self._windows.values(), key=lambda w: w.limit)
                },
            }

    # -- deciding (lock held) -----------------------------------------------------------------
    def _wait_needed(self, now: float, mono: float) -> float:
        """Seconds to wait before the next request may go; 0 or less means go now."""
        if now < self._blocked_until:
            return self._blocked_until - now
        if not self._windows:
            # Until the first answer says what the quota is, send one request at a time.
            return _POLL_SECONDS if self._in_flight and not self._responses else 0.0
        gate = 0.0
        spacing = 0.0
        # Only the shortest window known is ever spread out (see "Spending"); others gate.
        shortest_span = min(
            (w.span for w in self._windows.values() if w.span is not None), default=math.inf
        )
        for window in self._windows.values():
            free = self._free(window, now)
            reserve = self._reserve(window)
            if free - reserve < 1:
                gate = max(gate, self._blocked_wait(window, now))
            elif (
                self._modelled(window, now)
                and not window.sliding
                and window.span == shortest_span
                and free - reserve <= _probe_slots(window.limit)
            ):
                # Until the window is seen to slide, its last few free slots are spread out
                # until its reset: requests keep going out as the first ones may leave it
                # (which shows how long it is, and that it slides) or across a fixed window's
                # reset (which shows that it does not). The rest is spent at once.
                spacing = max(spacing, (window.last.reset - now) / (free - reserve))
        if gate > 0:
            return gate
        if self._last_sent_mono is None:
            return 0.0
        return self._last_sent_mono + spacing - mono

    def _free(self, window: _Window, now: float) -> int:
        """A safe lower bound of the window's free slots now."""
        best = self._floor(window.last)
        if self._latest is not None:
            best = max(best, self._floor(self._latest, window))
        if self._trusted(window, now):
            assert window.span is not None
            best = max(best, window.limit - self._occupied(now - window.span - self.safety))
        return best

    @classmethod
    def _trusted(cls, window: _Window, now: float) -> bool:
        """Whether the model may admit requests the reports do not: only once the window was
        seen to slide. Before that a fixed window that we happened to fill in a burst just
        after its reset looks like a sliding one a little shorter than the time since our
        previous burst, and the model would free its slots before the real reset."""
        return window.sliding and cls._modelled(window, now)

    @staticmethod
    def _modelled(window: _Window, now: float) -> bool:
        # A bound under a second says only that the first request came late in a window that
        # resets all at once: headers in whole seconds cannot describe a shorter sliding one.
        return (
            window.span is not None
            and window.span > _MIN_MODEL_SPAN
            and window.model_off_until <= now
        )

    def _floor(self, report: _Report, window: _Window | None = None) -> int:
        """Remaining per ``report``, less every request it may not have counted; for ``window``
        when given, which the report may not name.

        The report names the window "most likely to exceed first": the one with fewer requests
        left, or (another reading) with the smaller share of its limit left. Under either,
        every window has at least the named share left of its limit, and a window with a
        larger limit at least the named count.
        """
        left = report.remaining
        if window is not None and window.limit < report.limit:
            left = left * window.limit // report.limit
        return left - report.in_flight_before - (self._seq - report.seq)

    def _occupied(self, since: float) -> int:
        """Requests that may still sit in a window holding everything counted after ``since``."""
        index = bisect_right(self._done, since, key=_done_at)
        return len(self._done) - index + len(self._in_flight)

    def _blocked_wait(self, window: _Window, now: float) -> float:
        """How long until a window that is full (as far as we know) may take a request."""
        reset_wait = window.last.reset + self.safety - now
        if self._trusted(window, now):
            assert window.span is not None
            # The model frees a slot when our oldest request in the window ages out.
            assert window.span is not None
            since = now - window.span - self.safety
            index = bisect_right(self._done, since, key=_done_at)
            if index < len(self._done):
                model_wait = self._done[index].done_at + window.span + self.safety - now  # type: ignore[operator]
                reset_wait = min(reset_wait, max(model_wait, 0.001))
            elif self._in_flight:
                reset_wait = min(reset_wait, _POLL_SECONDS)
        if reset_wait > 0:
            return reset_wait
        # The reset has passed, so the window has room again, but how much is unknown: let one
        # request through and wait for what its answer says.
        latest_seq = self._latest.seq if self._latest is not None else 0
        if any(seq > latest_seq for seq in self._in_flight):
            return _POLL_SECONDS
        return 0.0

    def _reserve(self, window: _Window) -> int:
        return int(window.limit * self.reserve_fraction)

    def _release(self, now: float, mono: float, method: str, url: str) -> None:
        self._seq += 1
        entry = _Sent(self._seq, now, mono, len(self._in_flight), method=method.upper())
        if self._readings is not None:
            entry.endpoint = _endpoint(url)
        self._in_flight[entry.seq] = entry
        self._local.entry = entry
        self._last_sent_mono = mono
        self.requests += 1

    def _shared_wait(self, now: float) -> tuple[float, object]:
        """With a spend store: a 429's hold first, then the shared quota's answer."""
        assert self._spend_store is not None
        if now < self._blocked_until:
            return self._blocked_until - now, None
        return self._spend_store.claim(now)

    def _settle_shared(self, entry: _Sent, now: float, status: int | None) -> None:
        if self._spend_store is not None and entry.spend_token is not None:
            self._spend_store.settle(entry.spend_token, now, status)
            entry.spend_token = None

    # -- learning (lock held) -----------------------------------------------------------------
    def _observe(
        self,
        limit: int,
        remaining: int,
        reset: float,
        entry: _Sent | None,
        status: int,
        now: float,
    ) -> None:
        report: _Report
        if entry is not None and entry.counted:
            report = _Report(
                limit, remaining, reset, entry.seq, entry.in_flight_before, entry.sent_at, now
            )
        elif entry is not None:
            report = _Report(limit, remaining, reset, entry.seq, entry.in_flight_before)
        else:  # an answer to a request the budget did not release: trust it least
            report = _Report(limit, remaining, reset, self._seq, len(self._in_flight))
        seq = report.seq
        window = self._windows.get(limit)
        if window is None:
            window = self._windows[limit] = _Window(limit, report)
        elif seq >= window.last.seq:
            window.last = report
        if not window.sliding and report.done_at is not None:
            anchor = window.anchor
            if anchor is None or anchor.done_at is None or anchor.seq > seq:
                window.anchor = report
            elif report.sent_at is not None and report.sent_at > anchor.done_at:
                window.sliding = self._slid(anchor, report)
                window.anchor = report
        if self._latest is None or seq >= self._latest.seq:
            self._latest = report
        if status != 429 and entry is not None and entry.counted:
            self._learn_span(window, remaining, reset, entry)
            self._check_model(window, remaining, entry, now)

    def _slid(self, earlier: _Report, later: _Report) -> bool:
        """Whether requests left the window between two reports that name the same reset.

        A window that resets all at once only gains requests until its reset: the later
        report must count the earlier one's, plus every request of ours surely counted in
        between (sent after the earlier answer, answered before the later request went out),
        plus its own. Fewer means some left while the reset stayed put: the window slides.
        Other clients' requests only add to the count, so they never fake this.
        """
        if (
            later.reset != earlier.reset
            or earlier.done_at is None
            or later.sent_at is None
            or later.sent_at <= earlier.done_at
        ):
            return False
        start = bisect_right(self._done, earlier.done_at, key=_done_at)
        end = bisect_left(self._done, later.sent_at, key=_done_at)
        between = sum(1 for s in self._done[start:end] if s.counted and s.sent_at > earlier.done_at)
        return later.limit - later.remaining < earlier.limit - earlier.remaining + between + 1

    def _learn_span(self, window: _Window, remaining: int, reset: float, entry: _Sent) -> None:
        """Narrow the window's length using ``reset`` = the oldest request in it + the length.

        The reset is whole seconds rounded up, so each report bounds the length to an interval
        one second wide around ``reset`` minus the oldest request's count time; reports whose
        oldest requests were counted at different fractions of a second narrow it quickly.

        The window now holds ``n = limit - remaining`` requests. Requests answered before this
        one was sent were surely counted before it, so the n-th latest send time among them and
        this one is no later than the oldest request in the window: the upper bound. No request
        can have been counted later than its answer, or than now: the n-th latest of those
        times, over every request sent so far, is no earlier than the oldest: the lower bounds
        (it is still in the window; it leaves less than a second before ``reset``).
        Requests of other clients loosen the upper bound (safe) and may push the lower bound
        too high, which the model check then notices.
        """
        held = window.limit - remaining
        if held < 1:
            return
        now = entry.done_at if entry.done_at is not None else self._last_wall
        end = self._answered_before(entry)
        start = max(0, end - held - _REORDER_SLACK)
        sends = [s.sent_at for s in self._done[start:end] if s.counted]
        latest_sends = heapq.nlargest(held, sends)
        earliest: float | None = None
        if held == 1:
            earliest = entry.sent_at
        elif len(latest_sends) >= held - 1:
            earliest = latest_sends[held - 2]
        bounds = [] if earliest is None else [reset - earliest]
        if len(latest_sends) >= held:
            # At most held - 1 of the requests counted before this one are still in the window,
            # so the held-th latest of them was counted (no earlier than it was sent) at least a
            # length before this one was (no later than its answer): a bound free of the
            # reset's rounding, as tight as the gap between our sends once requests age out.
            bounds.append(now - latest_sends[held - 1])
        for bound in bounds:
            if bound > 0 and (window.span is None or bound < window.span):
                window.span = bound
        # This request is the last entry of the answered list; those in flight count as "now".
        from_end = held - len(self._in_flight)
        if from_end <= 1:
            latest = now
        elif from_end <= len(self._done):
            latest = _done_at(self._done[-from_end])
        else:
            return
        # The oldest is still in the window, and the rounded-up reset is less than a second
        # after it leaves.
        window.shortest = max(window.shortest, entry.sent_at - latest, reset - 1 - latest)

    def _answered_before(self, entry: _Sent) -> int:
        """How many answered requests (from the start of the list) came back before ``entry``
        was sent; ``entry`` itself, the last answered, never counts."""
        return min(bisect_right(self._done, entry.sent_at, key=_done_at), len(self._done) - 1)

    def _check_model(self, window: _Window, remaining: int, entry: _Sent, now: float) -> None:
        """Set the model aside when the server's count does not fit a sliding window.

        It must count no more than the requests answered within the longest possible window
        length (else someone else spends the quota), and no fewer than those surely counted
        within the shortest one (else the window is not sliding, e.g. it resets all at once).
        """
        if not self._modelled(window, now):
            return
        assert window.span is not None
        held = window.limit - remaining
        most = self._occupied(entry.sent_at - window.span)
        least = 1
        if window.shortest > 0:
            cutoff = now - window.shortest
            start = bisect_right(self._done, cutoff, key=_done_at)
            end = self._answered_before(entry)
            least += sum(1 for s in self._done[start:end] if s.counted and s.sent_at > cutoff)
        if least <= held <= most and window.shortest <= window.span:
            return
        window.model_failures += 1
        # Someone else's requests leave the window after one length; a second failure means the
        # model itself does not fit, so it stays off. Fewer counted than surely sent within the
        # shortest length is no one else's doing: the window is not sliding (it resets all at
        # once), and a sliding model of it would overestimate the room after a reset.
        fixed = held < least
        window.model_off_until = (
            now + 2 * window.span if window.model_failures < 2 and not fixed else math.inf
        )
        log.info(
            "Procore counts %d requests in its %d-request window where a sliding window "
            "would hold %d to %d of ours; spending down to its reported remaining and "
            "waiting for its reset instead.",
            held,
            window.limit,
            least,
            most,
        )

    def _on_429(
        self, headers: Mapping[str, str], report: tuple[int, int, float] | None, now: float
    ) -> None:
        self.rate_limited += 1
        retry_after = _number(headers.get("Retry-After"))
        if retry_after is not None:
            until = now + retry_after
        elif report is not None:
            until = report[2]
        else:
            until = now + 1.0
        self._blocked_until = max(self._blocked_until, until + self.safety)
        if self._spend_store is not None:
            self._spend_store.hold_until(self._blocked_until)
        if report is not None and report[1] == 0:
            # A real quota refusal: this window's model let us down, so stop trusting it.
            window = self._windows.get(report[0])
            if window is not None:
                window.model_off_until = math.inf
        log.info("Procore answered 429; holding all requests for %.1f s.", until - now)

    # -- housekeeping (lock held) ---------------------------------------------------------
    def _now(self) -> float:
        # Never backwards, so the answered list stays ordered by time.
        self._last_wall = max(self._last_wall, self._wall())
        return self._last_wall

    def _close_abandoned(self) -> None:
        """Retire requests that will never see an answer (transport failures, dead threads)."""
        now = self._now()
        previous: _Sent | None = getattr(self._local, "entry", None)
        if previous is not None:  # this thread's last attempt failed before any response
            self._local.entry = None
            self._retire(previous, now)
        cutoff = self._clock() - self.stale_after
        for entry in [e for e in self._in_flight.values() if e.sent_mono < cutoff]:
            self._retire(entry, now)

    def _retire(self, entry: _Sent, now: float) -> None:
        if self._in_flight.pop(entry.seq, None) is None:
            return
        entry.done_at = now
        entry.counted = None  # maybe counted: it occupies a slot but proves nothing
        self._settle_shared(entry, now, None)
        self._done.append(entry)

    def _trim(self) -> None:
        largest = max((w.limit for w in self._windows.values()), default=0)
        keep = 2 * largest + 256
        if len(self._done) > 2 * keep:
            del self._done[: len(self._done) - keep]


class _ReadingLog:
    """Readings kept in columns (about 40 bytes each: a load run's tens of thousands of answers
    stay small in memory until they are stored)."""

    def __init__(self) -> None:
        self.times = array("d")  # sent_at, answered_at, reset (NaN: none) per reading
        self.numbers = array("q")  # status, limit, remaining (-1: none) per reading
        self.calls = array("I")  # index into names
        self.names: list[tuple[str, str]] = []
        self._name_index: dict[tuple[str, str], int] = {}

    def add(
        self, entry: _Sent, answered_at: float, status: int, report: tuple[int, int, float] | None
    ) -> None:
        limit, remaining, reset = report if report is not None else (-1, -1, math.nan)
        self.times.extend((entry.sent_at, answered_at, reset))
        self.numbers.extend((status, limit, remaining))
        name = (entry.method, entry.endpoint)
        index = self._name_index.get(name)
        if index is None:
            index = self._name_index[name] = len(self.names)
            self.names.append(name)
        self.calls.append(index)

    def readings(self) -> list[Reading]:
        out = []
        for i, call in enumerate(self.calls):
            sent_at, answered_at, reset = self.times[3 * i : 3 * i + 3]
            status, limit, remaining = self.numbers[3 * i : 3 * i + 3]
            method, endpoint = self.names[call]
            out.append(
                Reading(
                    sent_at,
                    answered_at,
                    method,
                    endpoint,
                    status,
                    None if limit < 0 else limit,
                    None if remaining < 0 else remaining,
                    None if math.isnan(reset) else reset,
                )
            )
        return out


def _endpoint(url: str) -> str:
    """``https://host/rest/v1.0/projects/5/locations?q=1`` → ``/rest/v1.0/projects/:id/locations``
    (the query is dropped: it may carry a secret)."""
    path = urlsplit(url).path
    return "/".join(":id" if part.isdigit() else part for part in path.split("/"))


def _probe_slots(limit: int) -> int:
    """Slots of a window not yet seen to slide that are spread out rather than spent at once."""
    return max(5, limit // 10)


def _done_at(entry: _Sent) -> float:
    return entry.done_at if entry.done_at is not None else math.inf


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _parse(headers: Mapping[str, str]) -> tuple[int, int, float] | None:
    """(limit, remaining, reset) from the X-Rate-Limit-* headers, or None if any is missing."""
    limit = _number(headers.get("X-Rate-Limit-Limit"))
    remaining = _number(headers.get("X-Rate-Limit-Remaining"))
    reset = _number(headers.get("X-Rate-Limit-Reset"))
    if limit is None or remaining is None or reset is None or limit < 1:
        return None
    return int(limit), int(remaining), reset
