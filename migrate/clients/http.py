"""All HTTP policy in one place: timeouts, retries, backoff, giving up, rate limits, redaction.

Nothing else in ``migrate`` imports ``requests``. The API clients call :class:`HttpClient`,
which retries transport failures, 5xx and 429 itself (POST and PATCH included: every BIM 360
Field call is a POST, and urllib3's own ``Retry`` would skip those), and hands back every other
response for the caller to interpret. Every message and log line made here is redacted: tickets,
tokens, passwords and client secrets never leave this module in clear.

When to give up, and why there are two rules:

- **The service answers, but badly** (5xx, 429, a body cut short): it is there, so each request
  counts its own attempts and ends after ``RetryPolicy.max_attempts`` (a 429 waits as told).
- **The service answers nothing at all** (connection refused or reset, connect or read
  timeout): it may be restarting, or gone. One request's attempts say little about that, and
  with several workers each running its own retries a dead service used to keep a command
  busy for a quarter of an hour. So every thread of one client shares one rule: the service is
  given up on when nothing was answered for ``give_up_after`` seconds (120 by default) while at
  least ``give_up_failures`` attempts in a row (8; across all threads) failed that way. Until
  then requests keep retrying with backoff, past ``max_attempts``, so an outage shorter than
  ``give_up_after`` is ridden out; from then on every request of that client, waiting or new,
  raises :class:`~migrate.errors.ServiceUnavailable` at once, and the command ends with exit 1
  and the command to run again. A dead service therefore ends a command within
  ``give_up_after`` plus one backoff ``cap`` and one ``connect_timeout`` (about 2.5 minutes by
  default). A request that alone keeps failing while the service answers other requests (one
  endpoint timing out) still ends at ``max_attempts``.

Every wait here (backoff, ``Retry-After``) is a wait on an event, not ``time.sleep``: it ends
at once when a stop is requested (Ctrl-C, :mod:`migrate.stopping`) or when another thread gives
the service up.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError

from migrate import __version__, stopping
from migrate.clients.urls import check_url
from migrate.errors import (
    AnswerLost,
    ApiError,
    ConfigError,
    IncompleteBody,
    ServiceUnavailable,
    TransportError,
)
from migrate.redaction import CREDENTIAL_PARAMS

log = logging.getLogger("migrate.http")

MASK = "***"
#: Query, form and JSON keys whose values are credentials wherever they appear.
SENSITIVE_KEYS = CREDENTIAL_PARAMS
DEFAULT_USER_AGENT = f"migrate/{__version__} (BIM 360 Field to Procore migration)"

_KEYS = "|".join(SENSITIVE_KEYS)
_PARAM_RE = re.compile(rf"(?i)(?<![\w-])({_KEYS})=([^&\s#'\"<>;]+)")
_QUOTED_RE = re.compile(rf"(?i)([\"']({_KEYS})[\"']\s*:\s*[\"'])([^\"']*)")
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")


# -- redaction --------------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask every secret value (also URL-encoded) and credential-looking parameters in ``text``.

    Catches ``ticket=…``, ``access_token=…``, ``client_secret=…``, ``password=…`` (query or
    form), the same keys as JSON members, and ``Bearer <token>``.
    """
    if not text:
        return text
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update((secret, quote(secret, safe=""), quote_plus(secret)))
    for value in sorted(forms, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _PARAM_RE.sub(rf"\1={MASK}", text)
    text = _QUOTED_RE.sub(rf"\1{MASK}", text)
    return _BEARER_RE.sub(rf"\1 {MASK}", text)


def strip_query_param(url: str, name: str) -> str:
    """``url`` without any ``name=`` query parameter (case-insensitive); the rest is untouched."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    wanted = name.lower()
    kept = [
        piece
        for piece in parts.query.split("&")
        if piece and unquote_plus(piece.split("=", 1)[0]).lower() != wanted
    ]
    return urlunsplit(parts._replace(query="&".join(kept)))


# Secrets registered by any client, so the logging filter below can mask them in urllib3's own
# debug lines (which print request URLs, query string included).
_registered_secrets: set[str] = set()
_registry_lock = threading.Lock()


def _register_secret(value: str) -> None:
    with _registry_lock:
        _registered_secrets.add(value)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with _registry_lock:
            secrets = tuple(_registered_secrets)
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


for _name in ("migrate.http", "urllib3.connectionpool", "urllib3.connection"):
    logging.getLogger(_name).addFilter(_RedactingFilter())


# -- policy, hooks, stats ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for a response and how to back off between attempts."""

    max_attempts: int = 8
    base: float = 0.25  # first backoff ceiling, seconds
    cap: float = 30.0  # largest backoff ceiling, seconds
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Smallest wait after a 429, doubled on each consecutive 429 (so ``Retry-After: 0`` can
    #: never become a tight loop against a service that is already refusing us).
    rate_limit_floor: float = 0.5
    #: Longest single wait a server may ask for (Retry-After, X-Rate-Limit-Reset).
    max_wait: float = 3600.0
    #: The shared give-up rule for a service that answers nothing (see the module docstring):
    #: given up after this many seconds without any answer ...
    give_up_after: float = 120.0
    #: ... once at least this many attempts in a row, across all threads, went unanswered.
    give_up_failures: int = 8

    @property
    def settle_seconds(self) -> float:
        """How long a write the client stopped waiting for (read timeout) may still take to
        be applied: twice the read timeout the service has already had. Only after it does a
        look-up see the write, and only after it can a repeat not be overtaken by the original.
        """
        return 2.0 * self.read_timeout

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Capped exponential backoff with full jitter, for the ``failures``-th failure."""
        ceiling = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return rng.uniform(0, ceiling)

    def rate_limit_floor_for(self, consecutive_429: int) -> float:
        return min(self.cap, self.rate_limit_floor * 2.0 ** max(0, consecutive_429 - 1))


def policy_for(service: Any) -> RetryPolicy:
    """The retry policy a ``[source]`` or ``[target]`` settings section asks for."""
    return RetryPolicy(
        read_timeout=float(service.timeout),
        give_up_after=float(getattr(service, "give_up_after", RetryPolicy.give_up_after)),
    )


class BytesSink(Protocol):
    """Where a download's bytes go: a file, or anything with a file's ``write``."""

    def write(self, chunk: bytes, /) -> object: ...


class RequestHook(Protocol):
    """Called around every attempt; Procore's rate budget plugs in here to pace requests."""

    def before_request(self, method: str, url: str) -> None:
        """Before each attempt (retries included); may sleep to pace."""

    def after_response(self, response: requests.Response) -> None:
        """After each response, errors included (they carry the X-Rate-Limit-* headers)."""


class HttpStats:
    """Counters a client keeps across threads: attempts, retries and time spent waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, endpoint) -> attempts
        self.statuses: Counter[int] = Counter()
        self.retries: Counter[str] = Counter()  # reason -> retries
        self.slept: dict[str, float] = {}  # "backoff" / "rate_limit" -> seconds
        self.bytes_downloaded = 0
        self.connections_opened = 0  # TCP connections; keep-alive keeps this low

    def count_connection(self) -> None:
        with self._lock:
            self.connections_opened += 1

    def count_request(self, method: str, endpoint: str) -> None:
        with self._lock:
            self.requests[(method, endpoint)] += 1

    def count_status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def count_retry(self, reason: str) -> None:
        with self._lock:
            self.retries[reason] += 1

    def add_sleep(self, reason: str, seconds: float) -> None:
        """Record time spent waiting; hooks that pace requests may call this too."""
        with self._lock:
            self.slept[reason] = self.slept.get(reason, 0.0) + seconds

    def add_downloaded(self, size: int) -> None:
        with self._lock:
            self.bytes_downloaded += size

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    @property
    def total_retries(self) -> int:
        with self._lock:
            return sum(self.retries.values())

    @property
    def total_slept(self) -> float:
        with self._lock:
            return sum(self.slept.values())

    def snapshot(self) -> dict[str, Any]:
        """A plain, JSON-able copy for reports."""
        with self._lock:
            return {
                "requests": {f"{m} {p}": n for (m, p), n in sorted(self.requests.items())},
                "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
                "retries": dict(sorted(self.retries.items())),
                "slept_seconds": {k: round(v, 3) for k, v in sorted(self.slept.items())},
                "bytes_downloaded": self.bytes_downloaded,
                "connections_opened": self.connections_opened,
            }


class _ShortBody(Exception):
    """A non-streamed body shorter than its Content-Length (treated like a reset)."""


#: Failures that mean the service answered nothing at all (see the module docstring).
_SILENT = frozenset({"connection", "timeout"})


class _Outage:
    """The give-up rule every thread of one client shares. Thread-safe.

    Counts unanswered attempts in a row (any thread) and since when nothing has been answered;
    any answer resets both. Once the rule trips, the client stays given up on: ``down`` is set
    and every later request raises the same :class:`ServiceUnavailable`.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._since: float | None = None  # when the first unanswered attempt of the run began
        self._last_answer = -math.inf
        self.down = threading.Event()
        self._error: tuple[str, str, str, int, str] | None = None  # message, method, url, n, cause

    def now(self) -> float:
        return self._clock()

    def answered(self) -> None:
        with self._lock:
            self._failures = 0
            self._since = None
            self._last_answer = self._clock()

    def never_answered(self) -> bool:
        with self._lock:
            return self._last_answer == -math.inf

    def answered_since(self, moment: float) -> bool:
        with self._lock:
            return self._last_answer >= moment

    def unanswered(
        self, attempt_started: float, describe: Callable[[int, float], tuple[str, ...]]
    ) -> None:
        """Count one unanswered attempt; raise ServiceUnavailable if the service is given up."""
        with self._lock:
            if self._error is None:
                self._failures += 1
                if self._since is None:
                    self._since = max(attempt_started, self._last_answer)
                silence = self._clock() - self._since
                policy = self._policy
                if self._failures >= policy.give_up_failures and silence >= policy.give_up_after:
                    message, method, url, cause = describe(self._failures, silence)
                    self._error = (message, method, url, self._failures, cause)
                    self.down.set()
        self.raise_if_down()

    def raise_if_down(self) -> None:
        error = self._error
        if error is not None:
            message, method, url, failures, cause = error
            raise ServiceUnavailable(
                message, method=method, url=url, attempts=failures, cause=cause
            ) from None


# -- the client -------------------------------------------------------------------------------


class HttpClient:
    """A pooled, retrying HTTP client for one service (``base_url``).

    ``request`` returns the response for any status the caller handles (``ok``; by default
    everything below 500 except 429) and retries connection failures, timeouts, bodies cut
    short, 5xx and 429: until ``policy.max_attempts`` (then :class:`TransportError`), or, while
    the service answers nothing at all, until the shared give-up rule trips (then
    :class:`ServiceUnavailable`, for every thread). Any other status raises :class:`ApiError`.
    A stop request (``stop``, by default :data:`migrate.stopping.STOP`) makes the next attempt
    or wait raise :class:`~migrate.stopping.Stopped`.

    ``sleep`` replaces the interruptible wait (tests that scale time down); ``monotonic`` is
    the clock of the give-up rule; ``clock`` (Unix seconds) reads ``Retry-After`` dates.
    """

    def __init__(
        self,
        base_url: str,
        *,
        policy: RetryPolicy | None = None,
        pool_size: int = 4,
        user_agent: str = DEFAULT_USER_AGENT,
        secrets: Iterable[str] = (),
        hooks: Iterable[RequestHook] = (),
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        setting: str = "",
    ) -> None:
        #: The config setting that names ``base_url`` (``[target] auth_url``): a first request
        #: that cannot connect at all (refused, or the name does not resolve) is that setting
        #: being wrong, a ConfigError at once, not an outage to ride out. Once the service has
        #: answered, the same failure is an outage (retried, see the module docstring).
        self.setting = setting
        self._secrets: set[str] = set()
        self._secrets_lock = threading.Lock()
        for secret in secrets:
            self.add_secret(secret)
        self.base_url = self._checked(base_url.rstrip("/"), "The HTTP client's base URL")
        self.policy = policy or RetryPolicy()
        self.hooks = tuple(hooks)
        self.stats = HttpStats()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._stop = stop or stopping.STOP
        self._outage = _Outage(self.policy, monotonic)
        self.session = requests.Session()
        # max_retries=0: no urllib3 Retry at all; every retry is decided below, explicitly.
        adapter = _CountingAdapter(
            self.stats.count_connection,
            pool_connections=4,
            pool_maxsize=pool_size,
            max_retries=0,
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- secrets --------------------------------------------------------------------------
    def add_secret(self, value: str) -> None:
        """Mask ``value`` in every message from now on (a ticket or token obtained later)."""
        if value:
            with self._secrets_lock:
                self._secrets.add(value)
            _register_secret(value)

    def redact(self, text: str, extra: Iterable[str] = ()) -> str:
        with self._secrets_lock:
            secrets = [*self._secrets, *extra]
        return redact(text, secrets)

    # -- URLs -------------------------------------------------------------------------------
    def url_for(self, path_or_url: str) -> str:
        """Absolute URL for a path on ``base_url``; absolute URLs pass the loopback/https check."""
        if re.match(r"(?i)^[a-z][a-z0-9+.-]*://", path_or_url):
            return self._checked(path_or_url, "A request URL")
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def _checked(self, url: str, where: str) -> str:
        try:
            return check_url(url, where)
        except ConfigError as exc:
            raise ConfigError(self.redact(str(exc))) from None

    @property
    def connections_opened(self) -> int:
        """TCP connections opened so far (keep-alive reuse keeps this low)."""
        return self.stats.connections_opened

    @property
    def given_up(self) -> threading.Event:
        """Set once the service is given up on (see the module docstring); waits can watch it."""
        return self._outage.down

    def back_off(self, failures: int, reason: str) -> None:
        """Wait as the policy says after the ``failures``-th failure a caller saw itself.

        For faults only the caller can recognise (a fresh token refused); interruptible like
        every wait here, and counted in the stats.
        """
        self._check_go()
        self.stats.count_retry(reason)
        self._pause("backoff", self.policy.backoff(failures, self._rng))

    # -- requests -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Any = None,
        data: Any = None,
        json: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        retry: bool = True,
        replay: bool = True,
        settle: bool = False,
        ok: Collection[int] | None = None,
    ) -> requests.Response:
        """Send one request, retrying what is retriable; return the response or raise.

        ``ok``: statuses returned to the caller (default: everything below 500 but 429).
        ``retry=False`` makes a single attempt. ``replay=False`` is for a write that must not
        happen twice (a create without an idempotency key, a sync whose uuids may not be
        refused when repeated): once it may have been applied (a lost or cut answer after the
        connection was made, or a 5xx) it raises :class:`~migrate.errors.AnswerLost` at once
        instead of sending it again, and the caller looks for what was applied first; what
        cannot have been applied (no connection made, 429) is retried as usual. ``settle``
        (implied by ``replay=False``) is for a write whose late arrival matters: after a read
        timeout the service may still apply it, so the client waits
        :attr:`RetryPolicy.settle_seconds` before sending it again or raising AnswerLost (a
        look-up then sees what it made; a repeat is not overtaken by the original).
        ``data``/``files`` may be file objects; they are rewound before each retry. With
        ``stream=True`` the caller reads and closes the body; prefer :meth:`download`, which
        checks it arrived whole.
        """
        method = method.upper()
        url = self.url_for(path_or_url)
        endpoint = _endpoint(path_or_url)
        extra_secrets = _sensitive_values(params, data, json)
        shown_url = self.redact(url, extra_secrets)
        max_attempts = self.policy.max_attempts if retry else 1
        rewind = _rewinder(data, files)
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        failures = 0
        consecutive_429 = 0
        last_cause = ""
        first_unanswered: float | None = None  # when this request's first silent attempt began
        attempt = 0
        while True:
            attempt += 1
            self._check_go()
            rewind()
            for hook in self.hooks:
                hook.before_request(method, url)
            self._check_go()  # a hook may have waited (the rate budget) while things changed
            self.stats.count_request(method, endpoint)
            started = self._outage.now()
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json,
                    files=files,
                    headers=dict(headers) if headers else None,
                    stream=stream,
                    timeout=timeout,
                )
                if not stream:
                    _check_complete(response)
            except (requests.RequestException, _ShortBody) as exc:
                reason, cause = _classify(exc, self.policy)
                last_cause = self.redact(cause, extra_secrets)
                if self.setting and _unreachable(exc) and self._outage.never_answered():
                    raise ConfigError(
                        f"{self.setting} = {self.base_url} could not be reached: {last_cause}. "
                        f"Nothing answers there; check {self.setting} in the config (for the "
                        "sandbox, the URL `migrate sandbox serve` prints), then run the "
                        "command again."
                    ) from None
                if reason is None:  # not worth retrying (bad URL, TLS verification, ...)
                    raise TransportError(
                        method=method, url=shown_url, attempts=attempt, cause=last_cause
                    ) from None
                if (settle or not replay) and _still_in_flight(exc):
                    self._settle(method, shown_url, last_cause)
                if not replay and not _never_sent(exc):
                    raise AnswerLost(
                        method=method, url=shown_url, attempts=attempt, cause=last_cause
                    ) from None
                consecutive_429 = 0
                failures += 1
                exhausted = attempt >= max_attempts
                if reason in _SILENT:
                    if first_unanswered is None:
                        first_unanswered = started
                    self._outage.unanswered(
                        started,
                        functools.partial(
                            self._given_up_message,
                            method=method,
                            shown_url=shown_url,
                            cause=last_cause,
                        ),
                    )
                    # While the service answers nothing at all, the shared rule decides when
                    # to stop; max_attempts ends a request that fails alone.
                    exhausted = exhausted and (
                        not retry or self._outage.answered_since(first_unanswered)
                    )
                else:
                    self._outage.answered()  # a body cut short: the service is there
                if exhausted:
                    raise TransportError(
                        method=method, url=shown_url, attempts=attempt, cause=last_cause
                    ) from None
                self._wait(
                    "backoff",
                    self.policy.backoff(failures, self._rng),
                    reason,
                    method,
                    shown_url,
                    last_cause,
                    attempt,
                    max_attempts,
                )
                continue

            self._outage.answered()
            for hook in self.hooks:
                hook.after_response(response)
            status = response.status_code
            self.stats.count_status(status)
            if (status in ok) if ok is not None else (status < 500 and status != 429):
                return response
            if status != 429 and status < 500:
                body = _body_excerpt(response, streamed=stream)
                raise ApiError(
                    status=status,
                    method=method,
                    endpoint=shown_url,
                    body=self.redact(body, extra_secrets),
                )
            response.close()
            failures += 1
            last_cause = f"HTTP {status}"
            if status == 429:
                consecutive_429 += 1
                wait, basis = self._rate_limit_wait(response, consecutive_429, failures)
                last_cause = f"HTTP 429 (rate limited; waited per {basis})"
                kind = "rate_limit"
            else:
                consecutive_429 = 0
                retry_after = _retry_after_seconds(response.headers, self._clock)
                wait = (
                    min(retry_after, self.policy.max_wait)
                    if retry_after is not None
                    else self.policy.backoff(failures, self._rng)
                )
                kind = "backoff"
            if status != 429 and not replay:
                raise AnswerLost(
                    method=method, url=shown_url, attempts=attempt, cause=last_cause
                ) from None
            if attempt >= max_attempts:
                raise TransportError(
                    method=method, url=shown_url, attempts=attempt, cause=last_cause
                ) from None
            self._wait(
                kind,
                wait,
                f"HTTP {status}",
                method,
                shown_url,
                last_cause,
                attempt,
                max_attempts,
            )

    def download(
        self,
        method: str,
        path_or_url: str,
        dest: BytesSink,
        *,
        params: Any = None,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        chunk_size: int = 1024 * 1024,
    ) -> tuple[int, Mapping[str, str]]:
        """Stream a 2xx body into ``dest``; return (bytes written, response headers).

        Getting the response is retried like :meth:`request`; a non-2xx answer raises
        :class:`ApiError` (its ``status`` tells 401/404 apart). A body that ends early raises
        :class:`IncompleteBody` after writing part of it: the caller discards the partial
        file and downloads again.
        """
        # identity: the bytes stored must be the bytes served, and Content-Length must count
        # exactly what we read.
        all_headers = {"Accept-Encoding": "identity", **(headers or {})}
        response = self.request(
            method,
            path_or_url,
            params=params,
            data=data,
            json=json,
            headers=all_headers,
            stream=True,
            ok=range(200, 300),
        )
        shown_url = self.redact(self.url_for(path_or_url), _sensitive_values(params, data, json))
        expected = _content_length(response)
        written = 0
        try:
            for chunk in response.iter_content(chunk_size):
                stopping.check(self._stop)
                dest.write(chunk)
                written += len(chunk)
        except requests.RequestException as exc:
            _, cause = _classify(exc, self.policy)
            raise IncompleteBody(
                method=method.upper(),
                url=shown_url,
                received=written,
                expected=expected,
                cause=self.redact(cause),
            ) from None
        finally:
            response.close()
            self.stats.add_downloaded(written)
        if expected is not None and written < expected:
            raise IncompleteBody(
                method=method.upper(), url=shown_url, received=written, expected=expected
            )
        return written, response.headers

    # -- waiting ----------------------------------------------------------------------------
    def _rate_limit_wait(
        self, response: requests.Response, consecutive_429: int, failures: int
    ) -> tuple[float, str]:
        floor = self.policy.rate_limit_floor_for(consecutive_429)
        retry_after = _retry_after_seconds(response.headers, self._clock)
        if retry_after is not None:
            wait, basis = retry_after, "Retry-After"
        else:
            reset = _reset_wait_seconds(response.headers, self._clock)
            if reset is not None:
                wait, basis = reset, "X-Rate-Limit-Reset"
            else:
                wait, basis = self.policy.backoff(failures, self._rng), "backoff"
        return min(max(wait, floor), self.policy.max_wait), basis

    def _wait(
        self,
        kind: str,
        seconds: float,
        reason: str,
        method: str,
        shown_url: str,
        cause: str,
        attempt: int,
        max_attempts: int,
    ) -> None:
        self.stats.count_retry(reason)
        level = logging.WARNING if seconds >= 10 else logging.INFO
        if attempt < max_attempts:
            next_try = f"attempt {attempt + 1} of {max_attempts}"
        else:
            next_try = (
                f"attempt {attempt + 1} (no answer yet; the service is given up on after "
                f"{self.policy.give_up_after:g} s without one)"
            )
        log.log(level, "%s %s: %s; %s in %.1f s", method, shown_url, cause, next_try, seconds)
        self._pause(kind, seconds)

    def _settle(self, method: str, shown_url: str, cause: str) -> None:
        seconds = self.policy.settle_seconds
        log.info(
            "%s %s: %s; the service may still apply it: waiting %.1f s before looking again",
            method,
            shown_url,
            cause,
            seconds,
        )
        self._pause("settle", seconds)

    def _pause(self, kind: str, seconds: float) -> None:
        """Wait ``seconds``; Stopped or ServiceUnavailable as soon as either applies."""
        if seconds <= 0:
            return
        self.stats.add_sleep(kind, seconds)
        if self._sleep is not None:
            self._check_go()
            self._sleep(seconds)
        else:
            stopping.sleep(seconds, stop=self._stop, until=self._outage.down)
        self._check_go()

    def _check_go(self) -> None:
        stopping.check(self._stop)
        self._outage.raise_if_down()

    def _given_up_message(
        self, failures: int, silence: float, method: str, shown_url: str, cause: str
    ) -> tuple[str, str, str, str]:
        message = (
            f"{self.base_url} has not answered for {silence:.0f} s: {failures} attempts in a "
            f"row got no answer, across every request in flight (last: {method} {shown_url}: "
            f"{cause}). The service or the network is down; what was done so far is kept, so "
            "run the same command again to resume once it answers."
        )
        return message, method, shown_url, cause


class _CountingAdapter(HTTPAdapter):
    """An adapter whose pools count every TCP connect (urllib3 only counts pool slots)."""

    def __init__(self, on_connect: Callable[[], None], **kwargs: Any) -> None:
        self._on_connect = on_connect
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        on_connect = self._on_connect

        class CountingHTTP(HTTPConnection):
            def connect(self) -> None:
                on_connect()
                super().connect()

        class CountingHTTPS(HTTPSConnection):
            def connect(self) -> None:
                on_connect()
                super().connect()

        self.poolmanager.pool_classes_by_scheme = {
            "http": type(
                "CountingHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": CountingHTTP}
            ),
            "https": type(
                "CountingHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": CountingHTTPS}
            ),
        }


# -- helpers ------------------------------------------------------------------------------------


def _endpoint(path_or_url: str) -> str:
    """The stats key: the path as given, without query (and without host for full URLs)."""
    if "://" in path_or_url:
        return urlsplit(path_or_url).path or "/"
    return path_or_url.split("?", 1)[0]


def _sensitive_values(*payloads: Any) -> list[str]:
    """Values of credential-named fields in params/form/JSON payloads, to mask in messages."""
    found: list[str] = []
    for payload in payloads:
        if isinstance(payload, Mapping):
            items: Iterable[Any] = payload.items()
        elif isinstance(payload, list | tuple):
            items = [item for item in payload if isinstance(item, tuple) and len(item) == 2]
        else:
            continue
        for key, value in items:
            if str(key).lower() in SENSITIVE_KEYS and isinstance(value, str | bytes) and value:
                found.append(
                    value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                )
    return found


def _rewinder(data: Any, files: Any) -> Callable[[], None]:
    """A function that puts file-like bodies back where they started, for a retry."""
    streams: list[tuple[Any, int]] = []
    candidates: list[Any] = [data]
    if isinstance(files, Mapping):
        candidates.extend(files.values())
    elif isinstance(files, list | tuple):
        candidates.extend(item[1] for item in files if isinstance(item, tuple) and len(item) > 1)
    for candidate in candidates:
        # requests accepts (filename, fileobj, ...) tuples as file values.
        fileobj = candidate[1] if isinstance(candidate, tuple) and len(candidate) > 1 else candidate
        if hasattr(fileobj, "read") and hasattr(fileobj, "seek") and hasattr(fileobj, "tell"):
            streams.append((fileobj, fileobj.tell()))

    def rewind() -> None:
        for fileobj, position in streams:
            fileobj.seek(position)

    return rewind


def _content_length(response: requests.Response) -> int | None:
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None  # Content-Length counts encoded bytes; urllib3 checks those itself
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _check_complete(response: requests.Response) -> None:
    # urllib3 2 already raises on a short body; this guards older urllib3 and odd servers.
    if response.request.method == "HEAD" or response.status_code in (204, 304):
        return
    expected = _content_length(response)
    if expected is not None and len(response.content) < expected:
        raise _ShortBody(f"body ended after {len(response.content)} of {expected} bytes")


_BODY_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


def _still_in_flight(exc: BaseException) -> bool:
    """The request reached the service, which had not answered when the client stopped
    waiting (a read timeout): it may be applied later. A dropped connection is the service
    done with it, one way or the other."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    return isinstance(exc, requests.ReadTimeout) or (
        isinstance(exc, requests.ConnectionError) and "Read timed out" in str(exc)
    )


def _classify(exc: BaseException, policy: RetryPolicy) -> tuple[str | None, str]:
    """(retry reason or None if not retriable, short description of the failure)."""
    text = str(exc)
    if isinstance(exc, _ShortBody):
        return "incomplete body", f"connection closed mid-body: {exc}"
    if isinstance(exc, requests.ConnectTimeout):
        return "timeout", f"no connection within {policy.connect_timeout:g} s (connect timeout)"
    if isinstance(exc, requests.ReadTimeout) or (
        isinstance(exc, requests.ConnectionError) and "Read timed out" in text
    ):
        return "timeout", f"no data within {policy.read_timeout:g} s (read timeout)"
    if isinstance(exc, _BODY_ERRORS):
        return "incomplete body", f"connection closed mid-body ({_innermost(text)})"
    if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return None, "TLS certificate verification failed"
    if isinstance(exc, requests.ConnectionError):
        return "connection", f"connection failed ({_innermost(text)})"
    return None, f"{type(exc).__name__}: {_innermost(text)}"


def _never_sent(exc: BaseException) -> bool:
    """Whether a failed attempt cannot have reached the service (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = str(exc)
    return isinstance(exc, requests.ConnectionError) and (
        "NewConnectionError" in text or "Connection refused" in text
    )


def _unreachable(exc: BaseException) -> bool:
    """No connection could be made at all: refused, or the host name does not resolve.

    Unlike a timeout or a reset (the service is there, or was), this is what a wrong URL looks
    like when it is the first thing a client tries (see ``HttpClient.setting``).
    """
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.Timeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NameResolutionError) or isinstance(
        getattr(reason, "__cause__", None), ConnectionRefusedError | socket.gaierror
    ):
        return True
    text = str(exc)
    return "NewConnectionError" in text and "refused" in text.lower()


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_REASON_RE = re.compile(
    r"(IncompleteRead\([^)]*\)|Connection broken: [^'\"]+|"
    r"RemoteDisconnected\([^)]*\)|Connection aborted)"
)


def _innermost(text: str) -> str:
    """The useful part of a urllib3 error chain, without object reprs and URLs."""
    for pattern in (_ERRNO_RE, _REASON_RE):
        found = pattern.search(text)
        if found:
            return found.group(0).strip().rstrip(".,")
    return text[:160]


def _retry_after_seconds(headers: Mapping[str, str], clock: Callable[[], float]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


def _reset_wait_seconds(headers: Mapping[str, str], clock: Callable[[], float]) -> float | None:
    value = headers.get("X-Rate-Limit-Reset")
    if value is None:
        return None
    try:
        return max(0.0, float(value) - clock())
    except ValueError:
        return None


def _body_excerpt(response: requests.Response, *, streamed: bool, limit: int = 2048) -> str:
    try:
        # A streamed body may be huge: read only its start.
        raw = next(response.iter_content(limit), b"") if streamed else response.content[:limit]
    except requests.RequestException:
        raw = b""
    finally:
        response.close()
    return raw.decode("utf-8", "replace")
