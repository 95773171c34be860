"""Fault injection shared by both simulators.

Random faults are drawn from a seeded RNG so a failing run can be replayed; targeted faults
(``inject``) fire on the next N matching requests so a test can aim at one exact call.
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from dataclasses import dataclass, field

#: Fault kinds understood by :class:`Faults`.
#: - ``error``: answer 500/502/503 before doing anything.
#: - ``rate_limit``: answer 429 with a ``Retry-After`` header (seconds from ``retry_after``).
#: - ``drop``: send the headers and half the body, then close the socket (nothing applied).
#: - ``lost_response``: apply the request, then drop the connection before the answer
#:   (the client cannot tell whether its write happened).
#: - ``slow``: sleep ``slow_seconds`` before answering.
FAULT_KINDS = ("error", "rate_limit", "drop", "lost_response", "slow")


@dataclass
class FaultConfig:
    """Rates are fractions of requests (0.0–1.0); ``paths`` limits faults to matching paths."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: tuple[int, ...] = (0, 1, 2, 3)
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.5
    paths: str | None = None
    seed: int = 0


@dataclass
class _Targeted:
    kind: str
    remaining: int
    path_pattern: re.Pattern[str] | None
    method: str | None
    retry_after: int | None = None


@dataclass
class Decision:
    """What to do with one request: at most one fault kind, plus an optional delay."""

    kind: str | None = None
    delay: float = 0.0
    retry_after: int = 0
    status: int = 500


@dataclass
class Faults:
    config: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._targeted: deque[_Targeted] = deque()
        self.fired: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``count`` requests matching ``path`` (regex) and ``method`` fail."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        pattern = re.compile(path) if path else None
        with self._lock:
            self._targeted.append(_Targeted(kind, count, pattern, method, retry_after))

    def clear(self) -> None:
        with self._lock:
            self._targeted.clear()
            self.config = FaultConfig(seed=self.config.seed)

    def decide(self, method: str, path: str) -> Decision:
        with self._lock:
            for target in self._targeted:
                if target.method and target.method != method:
                    continue
                if target.path_pattern and not target.path_pattern.search(path):
                    continue
                target.remaining -= 1
                if target.remaining <= 0:
                    self._targeted.remove(target)
                return self._fire(target.kind, target.retry_after)
            cfg = self.config
            if cfg.paths and not re.search(cfg.paths, path):
                return Decision()
            delay = cfg.slow_seconds if self._rng.random() < cfg.slow_rate else 0.0
            if delay:
                self.fired["slow"] += 1
            roll = self._rng.random()
            for kind, rate in (
                ("error", cfg.error_rate),
                ("rate_limit", cfg.rate_limit_rate),
                ("drop", cfg.drop_rate),
                ("lost_response", cfg.lost_response_rate),
            ):
                if roll < rate:
                    decision = self._fire(kind, None)
                    decision.delay = delay
                    return decision
                roll -= rate
            return Decision(delay=delay)

    def _fire(self, kind: str, retry_after: int | None) -> Decision:
        # Called with the lock held.
        self.fired[kind] += 1
        if kind == "slow":
            return Decision(delay=self.config.slow_seconds)
        decision = Decision(kind=kind)
        if kind == "rate_limit":
            decision.retry_after = (
                retry_after
                if retry_after is not None
                else self._rng.choice(self.config.retry_after)
            )
        elif kind == "error":
            decision.status = self._rng.choice((500, 502, 503))
        return decision
