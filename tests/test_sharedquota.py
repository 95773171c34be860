"""The shared quota ledger (issue 18): what several processes' budgets claim from one file.

Each store below is a separate connection to the same SQLite file, as each worker process has;
times are given explicitly, so every decision is checked at an exact moment. The portfolio
tests (tests/test_portfolio.py) prove the same ledger against the simulator's own count.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from migrate.clients.ratebudget import RateBudget
from migrate.clients.sharedquota import (
    QUOTA_ENV,
    LedgerSettings,
    LedgerSpendStore,
    QuotaWindow,
    create_ledger,
    ledger_totals,
    quota_environment,
    spend_store_from_env,
)
from migrate.errors import ConfigError

SETTINGS = LedgerSettings(
    windows=(QuotaWindow(3, 1.0), QuotaWindow(5, 10.0)), reserve_fraction=0.0, safety=0.0
)


def _stores(tmp_path: Path, n: int = 2) -> list[LedgerSpendStore]:
    path = create_ledger(tmp_path / "quota.sqlite", SETTINGS)
    return [LedgerSpendStore(path, f"p{i}") for i in range(n)]


def test_two_processes_never_take_more_than_a_window_holds(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    tokens = []
    for store in (first, second, first):
        wait, token = store.claim(100.0)
        assert wait == 0
        tokens.append(token)
    wait, token = second.claim(100.0)
    assert token is None and wait > 0  # the spike window (3 per second) is full
    for token in tokens:
        first.settle(token, 100.2, 200)
    # A slot frees one window length after the answer that fills it arrived.
    wait, _ = second.claim(100.5)
    assert wait == pytest.approx(0.7)
    assert second.claim(101.25)[0] == 0
    assert first.claim(101.25)[0] == 0
    # Five in ten seconds: the longer window binds now, until the first answers are 10 s old.
    wait, _ = second.claim(102.5)
    assert wait == pytest.approx(110.2 - 102.5)
    assert ledger_totals(first.path) == {
        "p0": {"requests": 3, "rate_limited": 0},
        "p1": {"requests": 2, "rate_limited": 0},
    }


def test_a_request_in_flight_holds_its_slot_until_answered_or_stale(tmp_path: Path) -> None:
    path = create_ledger(
        tmp_path / "quota.sqlite",
        LedgerSettings(windows=(QuotaWindow(1, 1.0),), reserve_fraction=0.0, stale_after=30.0),
    )
    store = LedgerSpendStore(path, "p0")
    assert store.claim(10.0)[0] == 0
    wait, _ = LedgerSpendStore(path, "p1").claim(20.0)
    assert 0 < wait < 0.1  # still in flight: look again soon
    # Its process died: after stale_after it counts as answered then, and leaves a window later.
    assert LedgerSpendStore(path, "p1").claim(41.1)[0] == 0


def test_a_429_frees_its_slot_and_holds_every_process(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    _, token = first.claim(50.0)
    first.settle(token, 50.1, 429)
    first.hold_until(53.0)
    wait, _ = second.claim(50.2)
    assert wait == pytest.approx(2.8)
    assert second.claim(53.0)[0] == 0
    assert ledger_totals(first.path)["p0"] == {"requests": 0, "rate_limited": 1}


def test_the_environment_names_the_ledger_or_fails_in_one_line(tmp_path: Path) -> None:
    assert spend_store_from_env({}) is None
    path = create_ledger(tmp_path / "quota.sqlite", SETTINGS)
    store = spend_store_from_env(quota_environment(path, "north"))
    assert isinstance(store, LedgerSpendStore) and store.holder == "north"
    with pytest.raises(ConfigError, match="does not exist"):
        spend_store_from_env({QUOTA_ENV: f"ledger:{tmp_path / 'missing.sqlite'}"})
    with pytest.raises(ConfigError, match="must be ledger:"):
        spend_store_from_env({QUOTA_ENV: "somewhere"})


def _claim_many(path: str, holder: str, count: int) -> None:
    store = LedgerSpendStore(path, holder)
    budget = RateBudget(spend_store=store)
    for _ in range(count):
        budget.before_request("GET", "/rest/v1.0/me")
        budget.after_response(_Answer())


class _Answer:
    status_code = 200
    headers: dict[str, str] = {}


def test_budgets_in_spawned_processes_share_the_ledger(tmp_path: Path) -> None:
    """Four processes (spawned, as on Windows) spend 40 requests; no 1-second window of their
    answers ever holds more than the limit."""
    settings = LedgerSettings(windows=(QuotaWindow(10, 1.0),), reserve_fraction=0.0)
    path = create_ledger(tmp_path / "quota.sqlite", settings)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_claim_many, args=(str(path), f"p{n}", 10)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert sum(row["requests"] for row in ledger_totals(path).values()) == 40
    import sqlite3

    conn = sqlite3.connect(path)
    sent = [row[0] for row in conn.execute("SELECT sent_at FROM spends ORDER BY sent_at")]
    done = sorted(row[0] for row in conn.execute("SELECT done_at FROM spends"))
    conn.close()
    assert len(sent) == 40
    # Each request was sent only once the answer of the one `limit` places before it was a
    # full window old.
    for later, earlier_done in zip(sent[10:], done, strict=False):
        assert later >= earlier_done + 1.0
