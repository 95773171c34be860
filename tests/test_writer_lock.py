"""One writer per staging DB: of two commands started together exactly one writes.

Real processes: pairs started together race for the lock (never both, never neither), a
holder killed with SIGKILL is taken over, and every writing command refuses with one line
naming the holder while another command holds the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.errors import EXIT_USAGE, WriterBusy
from migrate.store import open_store
from migrate.store.writer import acquire_writer

MAPPINGS = Path(__file__).parent.parent / "mappings"
#: Generous: only a broken lock (a child waiting forever) ever gets near it.
LINE_TIMEOUT = 120

# Waits for "go" so both processes of a pair are started before either takes the lock, then
# reports what happened and, if it got the lock, holds it until told to let go.
CONTENDER = textwrap.dedent(
    """
    import sys
    from migrate.errors import WriterBusy
    from migrate.store import open_store
    from migrate.store.writer import acquire_writer

    store = open_store(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        acquire_writer(store, sys.argv[2])
    except WriterBusy as exc:
        print("refused", exc, flush=True)
        sys.exit(2)
    if len(sys.argv) > 3:  # also sit inside a long write transaction, like transform does
        store.conn.execute("BEGIN IMMEDIATE")
    print("acquired", flush=True)
    sys.stdin.readline()
    store.close()
    """
)


class Contender:
    """A child process that tries to take the writer lock when told to."""

    def __init__(self, db: Path, command: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(db), command, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = ThreadPoolExecutor(max_workers=1)

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self._reader.submit(self.proc.stdout.readline).result(LINE_TIMEOUT).strip()

    def tell(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        with self.proc:
            if self.proc.poll() is None:
                self.tell()
            code = self.proc.wait(LINE_TIMEOUT)
        self._reader.shutdown()
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        self.proc.wait(LINE_TIMEOUT)
        self._reader.shutdown()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "staging.db"
    open_store(path).close()
    return path


@pytest.mark.slow
def test_of_two_commands_started_together_exactly_one_writes(tmp_path: Path) -> None:
    for pair in range(20):
        path = tmp_path / f"staging-{pair}.db"
        open_store(path).close()
        first, second = Contender(path, "load"), Contender(path, "transform")
        try:
            assert (first.line(), second.line()) == ("ready", "ready")
            first.tell("go")
            second.tell("go")
            outcomes = {"load": first.line(), "transform": second.line()}
        finally:
            codes = {"load": first.finish(), "transform": second.finish()}
        kinds = sorted(line.split()[0] for line in outcomes.values())
        assert kinds == ["acquired", "refused"], (pair, outcomes)
        winner = "load" if outcomes["load"] == "acquired" else "transform"
        loser = "transform" if winner == "load" else "load"
        pid = (first if winner == "load" else second).proc.pid
        assert f"is being written by `migrate {winner}` (pid {pid}," in outcomes[loser]
        assert f"then run `migrate {loser}` again" in outcomes[loser]
        assert codes == {winner: 0, loser: EXIT_USAGE}
        with open_store(path) as store:  # the winner let go when it closed the store
            assert store.conn.execute("SELECT count(*) FROM writer_lock").fetchone()[0] == 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_holder_is_taken_over(db: Path) -> None:
    holder = Contender(db, "extract")
    assert holder.line() == "ready"
    holder.tell("go")
    assert holder.line() == "acquired"
    with open_store(db) as store:
        with pytest.raises(WriterBusy, match=rf"`migrate extract` \(pid {holder.proc.pid},"):
            acquire_writer(store, "load")
        holder.kill()
        with acquire_writer(store, "load"):
            row = store.conn.execute("SELECT command, pid FROM writer_lock").fetchone()
            assert row == ("load", os.getpid())
        assert store.conn.execute("SELECT count(*) FROM writer_lock").fetchone()[0] == 0


def test_a_holder_inside_a_long_transaction_is_named_without_waiting(db: Path) -> None:
    holder = Contender(db, "transform", "hold-transaction")
    try:
        assert holder.line() == "ready"
        holder.tell("go")
        assert holder.line() == "acquired"
        # A minute of busy timeout: waiting on BEGIN would end in "database is locked".
        with (
            open_store(db, busy_timeout_ms=60_000) as store,
            pytest.raises(WriterBusy) as refused,
        ):
            acquire_writer(store, "load")
        assert f"`migrate transform` (pid {holder.proc.pid}," in str(refused.value)
    finally:
        assert holder.finish() == 0


def test_the_same_process_may_take_it_again_and_closing_releases_it(db: Path) -> None:
    store = open_store(db)
    outer = acquire_writer(store, "run")
    inner = acquire_writer(store, "extract")
    assert inner.nested and not outer.nested
    inner.release()
    assert store.conn.execute("SELECT command FROM writer_lock").fetchone() == ("run",)
    store.close()
    with open_store(db) as again:
        assert again.conn.execute("SELECT count(*) FROM writer_lock").fetchone()[0] == 0
        lock = acquire_writer(again, "load")
        lock.release()
        lock.release()  # twice is harmless


@pytest.fixture
def held(db: Path) -> Iterator[Contender]:
    holder = Contender(db, "load")
    assert holder.line() == "ready"
    holder.tell("go")
    assert holder.line() == "acquired"
    yield holder
    assert holder.finish() == 0


@pytest.mark.parametrize(
    "command",
    [
        ["extract"],
        ["transform", "--offline"],
        ["load"],
        ["report", "--offline"],
        ["quarantine", "release", "1"],
    ],
)
def test_every_writing_command_refuses_while_another_writes(
    db: Path, held: Contender, command: list[str]
) -> None:
    config = db.parent / "migration.toml"
    config.write_text(
        '[source]\nbase_url = "http://127.0.0.1:9"\nproject_id = "p"\n'
        '[target]\nbase_url = "http://127.0.0.1:9"\nauth_url = "http://127.0.0.1:9"\n'
        f'company_id = 1\nproject_id = 2\n[mappings]\ndir = "{MAPPINGS}"\n',
        encoding="utf-8",
    )
    env = {
        "BIM360_FIELD_USERNAME": "u@example.com",
        "BIM360_FIELD_PASSWORD": "not-used",
        "PROCORE_CLIENT_ID": "id",
        "PROCORE_CLIENT_SECRET": "not-used",
    }
    with open_store(db) as store:
        runs_before = _rows(store, "runs")

    result: Any = CliRunner().invoke(main, [*command, "--config", str(config)], env=env)

    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"Error: {db} is being written by `migrate load` ")
    assert f"(pid {held.proc.pid}, since " in lines[0]
    name = " ".join(word for word in command if word.isalpha())
    assert f"then run `migrate {name}` again" in lines[0]
    assert "wait for it to finish" in lines[0]
    with open_store(db) as store:
        assert _rows(store, "runs") == runs_before  # nothing recorded, nothing changed
        assert store.conn.execute("SELECT command FROM writer_lock").fetchone() == ("load",)


def _rows(store: Any, table: str) -> list[tuple[Any, ...]]:
    return store.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
