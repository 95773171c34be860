"""The whole pipeline under each injected fault alone and all together: an exact target state.

The faults, on both simulators unless noted:
- 5xx: 10 % of requests answered 500/502/503.
- 429-retry-after: 5 % answered 429 with ``Retry-After`` 0-3 s.
- connection-resets: 5 % of connections reset after half the response body.
- ticket-expiry: BIM 360 Field tickets expire every 20 calls (a run makes 86; 200 would
  never fire).
- token-expiry: every live Procore token expires behind the client's back mid-load.
- slow-server: 20 % of requests answered 50 ms late.
- slow-past-timeout: 5 % answered 0.6 s late with the client's read timeout at 0.3 s, so
  the client gives up on requests that Procore applies anyway, later.
- lost-responses: 5 % of Procore requests applied, then the connection is dropped (Field
  reads are harmless to lose, Procore writes are the ambiguous ones).
- all-together: all of these but the slow-past-timeout, with Retry-After 0-1 s.

Each run goes through ``run_pipeline`` in this process with the real retry policy, must
finish in one go, and must leave Procore and the staging DB exactly as the reference run did
(see conftest.py). Each case also checks that its faults really fired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from migrate.pipeline import run_pipeline
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.runner import Sandbox
from migrate.settings import load_settings
from tests.chaos.conftest import (
    Reference,
    prepare_workdir,
    staging_figures,
    statuses,
    target_state,
)

pytestmark = pytest.mark.slow

FAULT_SEED = 8
TICKET_MAX_CALLS = 20
#: Load's upload requests after which every live Procore token expires. Once per run: a
#: second expiry while a call is still retrying with its renewed token stops the run with a
#: CredentialError (reported with issue 8); real tokens live 90 minutes.
EXPIRE_TOKENS_AT_UPLOAD = 20
#: Procore's spike window, 10 s by default. The client takes any 429 as "this window is full"
#: and waits for its X-Rate-Limit-Reset however much the headers say remains, so each injected
#: 429 held every thread for about 10 s (the 429 case took 25 s, all together 50 s). A 1 s
#: window keeps that behaviour, and Retry-After's 0-3 s, at a fraction of the time.
SPIKE_WINDOW = 1.0


@dataclass(frozen=True)
class Chaos:
    """One row of the matrix."""

    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Procore only: lost answers to its writes are the ambiguous ones.
    lost_response_rate: float = 0.0
    ticket_expiry: bool = False
    token_expiry: bool = False
    #: The client's read timeout for both services, seconds (None: the default 60).
    timeout: float | None = None

    def sandbox_options(self) -> dict[str, Any]:
        return {
            "field_faults": self.faults,
            "procore_faults": replace(self.faults, lost_response_rate=self.lost_response_rate),
            "field_options": {"ticket_max_calls": TICKET_MAX_CALLS} if self.ticket_expiry else {},
            "procore_options": {"spike_window": SPIKE_WINDOW},
        }


def faults(**rates: Any) -> FaultConfig:
    return FaultConfig(seed=FAULT_SEED, **rates)


MATRIX = {
    "5xx": Chaos(faults(error_rate=0.10)),
    "429-retry-after": Chaos(faults(rate_limit_rate=0.05, retry_after=(0, 1, 2, 3))),
    "connection-resets": Chaos(faults(drop_rate=0.05)),
    "ticket-expiry": Chaos(ticket_expiry=True),
    "token-expiry": Chaos(token_expiry=True),
    "slow-server": Chaos(faults(slow_rate=0.20, slow_seconds=0.05)),
    "slow-past-timeout": Chaos(faults(slow_rate=0.05, slow_seconds=0.6), timeout=0.3),
    "lost-responses": Chaos(lost_response_rate=0.05),
    # Retry-After 0-1 s: with 0-3 s this case took 35 s instead of 20.
    "all-together": Chaos(
        faults(
            error_rate=0.10,
            rate_limit_rate=0.05,
            retry_after=(0, 1),
            drop_rate=0.05,
            slow_rate=0.20,
            slow_seconds=0.05,
        ),
        lost_response_rate=0.05,
        ticket_expiry=True,
        token_expiry=True,
    ),
}


def expire_tokens(app: Any) -> None:
    """End every live token's lifetime now, as Procore does when a token's time is up.

    The simulator has no call for it (FieldApp has expire_tickets()), and moving its clock
    would also move X-Rate-Limit-Reset away from the client's clock, which the client's rate
    budget would then wait out.
    """
    with app.lock:
        now = app.now()
        for token, expires_at in app._tokens.items():
            app._tokens[token] = min(expires_at, now)


@contextmanager
def token_expiry(box: Sandbox, enabled: bool) -> Iterator[list[int]]:
    """Expire Procore's tokens once load has sent EXPIRE_TOKENS_AT_UPLOAD upload requests.

    The client renews a token ahead of its expiry on its own clock, so only an expiry it
    cannot foresee makes a token fail in use: the next calls answer 401, and the client must
    renew and repeat them. Yields the upload counts at which the tokens expired.
    """
    done: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        app = box.procore_app
        while app.call_counts().get("uploads.create", 0) < EXPIRE_TOKENS_AT_UPLOAD:
            if stop.wait(0.002):
                return
        expire_tokens(app)
        done.append(EXPIRE_TOKENS_AT_UPLOAD)

    watcher = threading.Thread(target=watch, daemon=True)
    if enabled:
        watcher.start()
    try:
        yield done
    finally:
        stop.set()
        if enabled:
            watcher.join()


def with_timeout(config: Path, seconds: float) -> None:
    text = config.read_text(encoding="utf-8")
    for table in ("[source]\n", "[target]\n"):
        assert table in text
        text = text.replace(table, f"{table}timeout = {seconds}\n")
    config.write_text(text, encoding="utf-8")


def assert_fired(box: Sandbox, chaos: Chaos, reference: Reference, expiries: list[int]) -> None:
    """Every fault the case configures happened, on every simulator it was set on."""
    rates = {
        "error": chaos.faults.error_rate,
        "rate_limit": chaos.faults.rate_limit_rate,
        "drop": chaos.faults.drop_rate,
        "slow": chaos.faults.slow_rate,
    }
    for kind, rate in rates.items():
        if rate:
            assert box.field_app.faults.fired[kind] > 0, f"no {kind} fault fired on Field"
            assert box.procore_app.faults.fired[kind] > 0, f"no {kind} fault fired on Procore"
    if chaos.faults.rate_limit_rate:
        assert statuses(box.field_app, 429) > 0 and statuses(box.procore_app, 429) > 0
    if chaos.lost_response_rate:
        assert box.procore_app.faults.fired["lost_response"] > 0
    if chaos.ticket_expiry:
        # 86 calls at 20 per ticket: expired tickets were refused with 401 and replaced.
        assert box.field_app.tickets_issued >= 4
        assert statuses(box.field_app, 401) >= 3
    if chaos.token_expiry:
        assert expiries == [EXPIRE_TOKENS_AT_UPLOAD], "load ended before the tokens expired"
        assert statuses(box.procore_app, 401) >= 1
        assert box.procore_app.call_counts()["oauth.token"] > reference.token_requests


def wait_until_answered(app: Any, timeout: float = 120.0) -> None:
    """Wait until the simulator has answered (or deliberately dropped) every request it
    received; the timeout only guards against a hang."""

    def unanswered() -> int:
        with app.lock:
            received = sum(app.calls.values())
            answered = sum(app.statuses.values())
        dropped = app.faults.fired["drop"] + app.faults.fired["lost_response"]
        return received - answered - dropped

    deadline = time.monotonic() + timeout
    while unanswered() > 0:
        assert time.monotonic() < deadline, f"{app.name}: {unanswered()} requests unanswered"
        time.sleep(0.01)


@pytest.mark.parametrize("name", list(MATRIX))
def test_fault_matrix_run_ends_in_the_clean_state(
    name: str,
    reference: Reference,
    sandbox_factory: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chaos = MATRIX[name]
    box = sandbox_factory(**chaos.sandbox_options())
    config = prepare_workdir(tmp_path / "work", box)
    if chaos.timeout is not None:
        with_timeout(config, chaos.timeout)
    # From the project folder, like the reference run: hints in issue descriptions name the
    # mappings folder relative to the working directory.
    monkeypatch.chdir(config.parent)

    started = time.monotonic()
    with token_expiry(box, chaos.token_expiry) as expiries:
        outcome = run_pipeline(load_settings(config), box.environment())
    seconds = time.monotonic() - started
    if chaos.timeout is not None:  # requests given up on land late: count them too
        for app in (box.field_app, box.procore_app):
            wait_until_answered(app)
    print(
        f"{name}: {seconds:.1f} s; fired on Field {box.field_app.faults.fired}, on Procore "
        f"{box.procore_app.faults.fired}; Field tickets {box.field_app.tickets_issued}, "
        f"Procore tokens {box.procore_app.call_counts().get('oauth.token')}"
    )

    assert outcome.exit_code == reference.exit_code
    assert outcome.results["load"].completed
    assert_fired(box, chaos, reference, expiries)
    assert target_state(box) == reference.state
    assert staging_figures(config) == reference.figures
