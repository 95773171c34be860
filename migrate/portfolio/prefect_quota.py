"""Procore's quota shared by workers on several machines, as Prefect rate limits (issue 18).

When one machine is not enough, a portfolio's projects run as Prefect flow runs on workers of a
work pool (:mod:`migrate.portfolio.prefect_flow`); they cannot share the local SQLite ledger
(:mod:`migrate.clients.sharedquota`), so the quota lives where every worker already talks to:
Prefect's server, as one *global concurrency limit with slot decay* per Procore window. Before
each request, every process's :class:`~migrate.clients.ratebudget.RateBudget` claims slots of
every limit (:class:`PrefectSpendStore`, one ``POST /v2/concurrency_limits/increment`` in
``rate_limit`` mode, which takes the slots of all the limits in one transaction or none). No
scheduler or lock of our own: Prefect's server decides.

Why these numbers (:func:`plan_limits`). A limit with slot decay is a leaky bucket: it holds at
most ``limit`` slots and ``slot_decay_per_second`` of them drain away each second. In any
stretch of ``T`` seconds it can hand out at most ``limit + decay * T`` slots (the bucket starts
at 0 or more and ends at ``limit`` or less). Procore counts a request at some moment after its
slots were taken: at most ``delay_allowance`` seconds later (a batch's unused slots are thrown
away halfway through that time; the rest covers sending the request). So the requests Procore
counts in any window of ``W`` seconds took their slots within ``W + delay_allowance`` seconds,
and the window never holds more than ``burst + rate * (W + delay_allowance)``. Each window gets
``rate = (allowed - burst) / (W + delay_allowance)``, where ``allowed`` is its limit less the
portfolio's reserve, so that sum stays within it. The same bound holds for a window that resets
all at once (the other reading of Procore's pages): each of its windows is one of those
stretches. Note that a limit of 3 600 with a decay of 1 per second would let 7 200 requests
through in an hour (a full bucket, then an hour of decay): the burst must come out of the
window's own allowance.

``burst`` is the same for every window, a tenth of the smallest window's allowance (at least
one batch): whatever a bucket lets through at once comes out of what it can let through steadily,
and over a long run only the steady rate counts. With Procore's 3 600/h and 150 per 10 s, a 1 %
reserve and 2 s allowed for delays, each limit takes a burst of 15; then the hourly one lets
0.985 requests a second through (98.5 % of the quota an hour) and the spike one 11.1, so the
hourly limit is what paces a long run.

Slots are hundredths of a request (:data:`SLOTS_PER_REQUEST`): Prefect's server drains
``floor(decay * seconds since the limit last changed)`` slots at each change, so every change
loses up to one slot of decay; with a slot a hundredth of a request that loss stays under 1 %
of a request per change (on whole-request slots it cost 10 % of the rate in our measurements),
and it can only make the limit stricter, never looser.

What each request costs in Prefect API calls: one increment per ``batch`` requests, plus one per
refusal (a ``423 Locked`` whose ``Retry-After`` says when slots will have drained; the process
asks again no sooner). A 429 from Procore (someone outside the portfolio spent the quota) holds
this process until its ``Retry-After`` and takes the slots that would drain meanwhile from every
limit, so the other workers pause too.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from migrate.clients.companylock import COMPANY_LOCK_ENV, CompanyLock
from migrate.clients.sharedquota import QUOTA_ENV, QUOTA_HOLDER_ENV, LedgerSettings, QuotaWindow
from migrate.errors import ConfigError, TransportError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

#: Slots one request takes from each limit (see the module docstring: decay is floored).
SLOTS_PER_REQUEST = 100
#: The value of ``MIGRATE_SHARED_QUOTA`` that names Prefect's limits: ``prefect:<spec>``.
PREFECT_SCHEME = "prefect:"
#: The burst every limit allows, as a share of the smallest window's allowance (see above).
BURST_SHARE = 0.1
#: Prefect's answer when a limit has no free slots.
_LOCKED = 423
#: The company lock's lease (Prefect's shortest is 60 s) and how often its holder renews it.
LOCK_LEASE_SECONDS = 60.0
LOCK_RENEW_SECONDS = 15.0
#: The longest a project waiting for the company lock goes without asking again.
LOCK_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PrefectLimit:
    """One Procore window as a Prefect global concurrency limit with slot decay."""

    name: str
    window: QuotaWindow
    #: Requests the limit lets through at once, from empty.
    burst: int
    #: Requests a second it lets through once the burst is spent.
    per_second: float

    @property
    def slots(self) -> int:
        """The limit's size in Prefect slots."""
        return self.burst * SLOTS_PER_REQUEST

    @property
    def slot_decay_per_second(self) -> float:
        return self.per_second * SLOTS_PER_REQUEST

    def most_in_window(self, delay_allowance: float) -> float:
        """The most requests Procore can count in one of this window's windows."""
        return self.burst + self.per_second * (self.window.seconds + delay_allowance)


@dataclass(frozen=True)
class PrefectQuotaPlan:
    """The Prefect limits standing for the portfolio's quota, and how workers claim them."""

    limits: tuple[PrefectLimit, ...]
    #: Requests' slots claimed per Prefect call.
    batch: int = 1
    #: Longest time from claiming a request's slots to Procore counting it (seconds).
    delay_allowance: float = 2.0
    #: The one-slot limit projects take while they create company building blocks
    #: (:class:`PrefectCompanyLock`); empty: none.
    company_lock: str = ""

    @property
    def names(self) -> list[str]:
        return [limit.name for limit in self.limits]

    @property
    def sustained_per_second(self) -> float:
        """Requests a second the whole portfolio makes once the bursts are spent."""
        return min(limit.per_second for limit in self.limits)

    def spec(self) -> str:
        """What workers are told (``MIGRATE_SHARED_QUOTA=prefect:<spec>``): the limits' names
        and how to claim them; their sizes live on Prefect's server."""
        fields: dict[str, Any] = {
            "names": ",".join(self.names),
            "batch": self.batch,
            "delay_allowance": self.delay_allowance,
        }
        if self.company_lock:
            fields["company_lock"] = self.company_lock
        return urlencode(fields)

    def as_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "delay_allowance": self.delay_allowance,
            "slots_per_request": SLOTS_PER_REQUEST,
            "sustained_per_second": round(self.sustained_per_second, 4),
            "company_lock": self.company_lock,
            "limits": [
                {
                    "name": limit.name,
                    "window": [limit.window.limit, limit.window.seconds],
                    "burst": limit.burst,
                    "per_second": round(limit.per_second, 4),
                    "slots": limit.slots,
                    "slot_decay_per_second": round(limit.slot_decay_per_second, 4),
                    "most_in_window": round(limit.most_in_window(self.delay_allowance), 2),
                }
                for limit in self.limits
            ],
        }


def require_prefect() -> None:
    """ConfigError (exit 2) with the install command when Prefect is not installed."""
    import importlib.util

    if importlib.util.find_spec("prefect") is None:
        raise ConfigError(
            "Running a portfolio on Prefect needs the optional extra: "
            "pip install 'migrate[portfolio]'."
        )


def limit_name(prefix: str, window: QuotaWindow) -> str:
    """``procore-3600s``: one name per window length, so every portfolio of the same Procore
    app and company (give each company its own ``prefix``) shares the same limits."""
    seconds = f"{window.seconds:g}".replace(".", "_")
    return f"{prefix}-{seconds}s"


def plan_limits(
    quota: LedgerSettings,
    *,
    prefix: str = "procore",
    batch: int = 1,
    delay_allowance: float = 2.0,
) -> PrefectQuotaPlan:
    """The Prefect limits that keep every window of ``quota`` within its allowance (see the
    module docstring for the bound). ConfigError when a window is too small for them."""
    if batch < 1:
        raise ConfigError(f"The Prefect quota's batch must be 1 or more, not {batch}.")
    if not delay_allowance > 0:
        raise ConfigError(f"delay_allowance must be more than 0 seconds, not {delay_allowance}.")
    if not quota.windows:
        raise ConfigError("The portfolio's [quota] names no window to share.")
    allowed = {window: quota.allowed(window) for window in quota.windows}
    burst = max(batch, math.ceil(min(allowed.values()) * BURST_SHARE))
    limits = []
    for window in quota.windows:
        room = allowed[window] - burst
        if room < 1:
            raise ConfigError(
                f"Procore's window of {window.limit} requests per {window.seconds:g} s is too "
                f"small for a Prefect batch of {batch}: use a smaller batch."
            )
        # Rounded down to a thousandth of a slot a second, as Prefect stores it.
        decay = math.floor(room * SLOTS_PER_REQUEST / (window.seconds + delay_allowance) * 1000)
        per_second = decay / 1000 / SLOTS_PER_REQUEST
        limits.append(PrefectLimit(limit_name(prefix, window), window, burst, per_second))
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        raise ConfigError(f"Two of the portfolio's quota windows have the same length: {names}.")
    return PrefectQuotaPlan(tuple(limits), batch, delay_allowance, company_lock_name(prefix))


def company_lock_name(prefix: str) -> str:
    """``procore-company-blocks``: the company lock of every portfolio with this ``prefix``
    (the same scheme as the quota's limits: one prefix per Procore company)."""
    return f"{prefix}-company-blocks"


def ensure_limits(plan: PrefectQuotaPlan, client: SyncPrefectClient | None = None) -> None:
    """Create the plan's limits on Prefect's server, or set an existing one's numbers."""
    from prefect.client.orchestration import get_client

    def upsert(prefect: SyncPrefectClient) -> None:
        for limit in plan.limits:
            prefect.upsert_global_concurrency_limit_by_name(
                limit.name, limit.slots, slot_decay_per_second=limit.slot_decay_per_second
            )
        if plan.company_lock:
            # One holder at a time; no decay: a dead holder's slot goes with its lease.
            prefect.upsert_global_concurrency_limit_by_name(
                plan.company_lock, 1, slot_decay_per_second=0.0
            )

    if client is not None:
        upsert(client)
        return
    with get_client(sync_client=True) as prefect:
        upsert(prefect)


@dataclass(frozen=True)
class PrefectQuota:
    """A :class:`~migrate.portfolio.project.SharedQuota` on Prefect's limits: every Procore
    client built with its environment claims them (:func:`spend_store`)."""

    spec: str

    def environment(self, holder: str) -> dict[str, str]:
        env = {QUOTA_ENV: PREFECT_SCHEME + self.spec, QUOTA_HOLDER_ENV: holder}
        lock = parse_qs(self.spec).get("company_lock", [""])[0]
        if lock:
            env[COMPANY_LOCK_ENV] = PREFECT_SCHEME + lock
        return env


def spend_store(spec: str, holder: str) -> PrefectSpendStore:
    """What :func:`migrate.clients.sharedquota.spend_store_from_env` builds for ``prefect:``."""
    fields = parse_qs(spec, keep_blank_values=True)
    try:
        names = [name for name in fields["names"][0].split(",") if name]
        batch = int(fields.get("batch", ["1"])[0])
        delay_allowance = float(fields.get("delay_allowance", ["2"])[0])
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{QUOTA_ENV} names no usable Prefect limits ({spec[:80]!r}); expected "
            "prefect:names=<limit>,<limit>&batch=<n>&delay_allowance=<seconds>."
        ) from None
    if not names or batch < 1 or not delay_allowance > 0:
        raise ConfigError(f"{QUOTA_ENV} names no usable Prefect limits ({spec[:80]!r}).")
    return PrefectSpendStore(names, holder, batch=batch, delay_allowance=delay_allowance)


class PrefectSpendStore:
    """A :class:`~migrate.clients.ratebudget.SpendStore` on Prefect's global rate limits.

    Thread-safe. Each claim that finds no slots of an earlier batch left makes one Prefect API
    call; a refusal tells when to ask again, and until then claims answer without asking.
    """

    def __init__(
        self,
        names: list[str],
        holder: str,
        *,
        batch: int = 1,
        delay_allowance: float = 2.0,
        client: SyncPrefectClient | None = None,
    ) -> None:
        self.names = list(names)
        self.holder = holder
        self.batch = batch
        #: A batch's slots are used within half the allowance or thrown away (see the module).
        self.hold_seconds = delay_allowance / 2
        self._lock = threading.Lock()
        self._client = client
        self._pool: deque[float] = deque()  # expiry (Unix s) of each unused request's slots
        self._not_before = -math.inf
        #: Prefect API calls made, and how many of them were refused (423).
        self.api_calls = 0
        self.refusals = 0
        #: Requests claimed, and claimed slots thrown away unused.
        self.claimed = 0
        self.expired = 0
        #: Limits whose slots a 429's hold took (see :meth:`hold_until`).
        self.held_limits = 0

    # -- SpendStore --------------------------------------------------------------------------
    def claim(self, now: float) -> tuple[float, object]:
        with self._lock:
            while self._pool and self._pool[0] <= now:
                self._pool.popleft()
                self.expired += 1
            if not self._pool:
                if now < self._not_before:
                    return self._not_before - now, None
                wait = self._take_batch(now)
                if wait > 0:
                    self._not_before = now + wait
                    return wait, None
            self._pool.popleft()
            self.claimed += 1
            return 0.0, self.holder

    def settle(self, token: object, now: float, status: int | None) -> None:
        # A request Procore refused (429) took no room there, but its slots stay taken: Prefect
        # cannot give back part of a decay, and that errs on the safe side.
        return None

    def hold_until(self, until: float) -> None:
        """A 429: hold this process, and take from every limit the slots that would drain
        before ``until``, so the other workers pause too (best effort: a limit already full
        holds them anyway)."""
        with self._lock:
            now = time.time()
            self._not_before = max(self._not_before, until)
            self._pool.clear()
            seconds = until - now
            if seconds <= 0:
                return
            client = self._connected()
            self.api_calls += 1
            for limit in client.read_global_concurrency_limits(limit=200):
                # At most the room it had when last changed (its stored count has not decayed
                # since): a limit already full holds everyone anyway.
                room = limit.limit - limit.active_slots
                slots = min(room, math.ceil(limit.slot_decay_per_second * seconds))
                if limit.name not in self.names or slots < 1:
                    continue
                self.api_calls += 1
                try:
                    client.increment_concurrency_slots(
                        names=[limit.name], slots=slots, mode="rate_limit"
                    )
                except Exception:  # best effort: this process holds regardless
                    continue
                self.held_limits += 1

    # -- Prefect (lock held) -------------------------------------------------------------------
    def _connected(self) -> SyncPrefectClient:
        if self._client is None:
            # The rate budget has no close hook: the connection closes with this store.
            self._client = connect(self)
        return self._client

    def _take_batch(self, now: float) -> float:
        """Claim a batch's slots from every limit; 0 on success, else seconds to wait."""
        import httpx

        client = self._connected()
        self.api_calls += 1
        try:
            response = client.increment_concurrency_slots(
                names=self.names, slots=self.batch * SLOTS_PER_REQUEST, mode="rate_limit"
            )
        except httpx.HTTPStatusError as error:
            if error.response.status_code == _LOCKED:
                self.refusals += 1
                return max(0.001, _seconds(error.response.headers.get("Retry-After")))
            if error.response.status_code == 422:
                raise ConfigError(
                    f"Prefect refused to rate-limit on {self.names}: "
                    f"{error.response.text[:200]}. Recreate them with "
                    "`python -m migrate.portfolio.prefect_flow limits`."
                ) from None
            raise self._unreachable(error) from None
        except httpx.HTTPError as error:
            raise self._unreachable(error) from None
        granted = {limit.get("name") for limit in response.json()}
        missing = [name for name in self.names if name not in granted]
        if missing:
            # Prefect lets a request through when a named limit does not exist: that would
            # spend Procore's quota unpaced.
            raise ConfigError(
                f"Prefect has no rate limit named {', '.join(missing)}. Create them with "
                "`python -m migrate.portfolio.prefect_flow limits` (or run the portfolio flow, "
                "which does)."
            )
        expiry = now + self.hold_seconds
        self._pool.extend(expiry for _ in range(self.batch))
        return 0.0

    def _unreachable(self, error: Exception) -> TransportError:
        return unreachable("grant Procore quota", error)


def company_lock(name: str) -> PrefectCompanyLock:
    """What :func:`migrate.clients.companylock.company_lock_from_env` builds for ``prefect:``."""
    if not name.strip():
        raise ConfigError(f"{COMPANY_LOCK_ENV}=prefect: names no Prefect limit.")
    return PrefectCompanyLock(name.strip())


class PrefectCompanyLock(CompanyLock):
    """The company lock on several machines: one slot of the Prefect global concurrency limit
    ``name`` (made by :func:`ensure_limits`, 1 slot, no decay), taken in ``concurrency`` mode
    and given back when the lock is.

    A holder killed without giving it back must not hold it for ever. The slot is taken with
    a *lease* (Prefect 3.4+: ``/v2/concurrency_limits/increment-with-lease``) that a thread of
    the holder renews every :data:`LOCK_RENEW_SECONDS`; a dead holder's lease runs out after
    :data:`LOCK_LEASE_SECONDS` and Prefect's server (its repossessor) frees the slot. Slot
    decay, the alternative, frees a slot after a fixed time whether or not its holder still
    works: a long template build would then share the lock with the next project, which is
    what the lock is there to stop. A Prefect server without leases answers 404: a
    ConfigError naming the version needed.
    """

    def __init__(self, name: str, client: SyncPrefectClient | None = None) -> None:
        super().__init__()
        self.name = name
        self._client = client
        self._lease: str | None = None
        self._renewing: threading.Event | None = None
        #: Prefect API calls made (takes, refusals, renewals, releases).
        self.api_calls = 0

    def _connected(self) -> SyncPrefectClient:
        if self._client is None:
            self._client = connect(self)
        return self._client

    def _acquire(self, on_wait: Callable[[], None]) -> None:
        import httpx

        from migrate import stopping

        client = self._connected()
        told = False
        while True:
            stopping.check()
            self.api_calls += 1
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[self.name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=LOCK_LEASE_SECONDS,
                )
                break
            except httpx.HTTPStatusError as error:
                status = error.response.status_code
                if status == _LOCKED:
                    if not told:
                        on_wait()
                        told = True
                    # Prefect's Retry-After follows the slot's average occupancy (up to 30 s):
                    # a lock is usually held for seconds, so look again sooner.
                    wait = _seconds(error.response.headers.get("Retry-After"))
                    stopping.sleep(min(max(wait, 0.05), LOCK_POLL_SECONDS))
                    continue
                if status == 404:
                    raise ConfigError(
                        "Prefect's server has no concurrency leases (Prefect 3.4 or later "
                        f"needed) for the company lock {self.name}."
                    ) from None
                raise unreachable("grant the company set-up lock", error) from None
            except httpx.HTTPError as error:
                raise unreachable("grant the company set-up lock", error) from None
        granted = response.json()
        self._lease = str(granted["lease_id"])
        if self.name not in {limit.get("name") for limit in granted.get("limits") or []}:
            # Prefect grants a lease on a limit that does not exist: no lock at all.
            self._release()
            raise ConfigError(
                f"Prefect has no concurrency limit named {self.name}. Create it with "
                "`python -m migrate.portfolio.prefect_flow limits` (or run the portfolio flow, "
                "which does)."
            )
        stop = threading.Event()
        self._renewing = stop
        threading.Thread(
            target=self._renew, args=(self._lease, stop), name="company-lock-lease", daemon=True
        ).start()

    def _renew(self, lease: str, stop: threading.Event) -> None:
        from uuid import UUID

        while not stop.wait(LOCK_RENEW_SECONDS):
            try:
                self.api_calls += 1
                self._connected().renew_concurrency_lease(UUID(lease), LOCK_LEASE_SECONDS)
            except Exception:  # best effort: the next renewal tries again
                continue

    def _release(self) -> None:
        from uuid import UUID

        if self._renewing is not None:
            self._renewing.set()
            self._renewing = None
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            self.api_calls += 1
            self._connected().release_concurrency_slots_with_lease(UUID(lease))
        except Exception:  # the lease runs out instead; the next holder waits that long
            return


def connect(owner: object) -> SyncPrefectClient:
    """A client of Prefect's API (``PREFECT_API_URL``), open until ``owner`` is collected."""
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    client.__enter__()
    weakref.finalize(owner, client.__exit__, None, None, None)
    return client


def unreachable(what: str, error: Exception) -> TransportError:
    """Prefect's API did not answer (or refused) ``what``: a transport failure, resumable."""
    return TransportError(
        f"Prefect's API did not {what} ({type(error).__name__}: {str(error)[:200]}). What was "
        "done so far is kept; run the project again (Prefect's task retries do) once the "
        "Prefect server answers."
    )


def _seconds(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 1.0
