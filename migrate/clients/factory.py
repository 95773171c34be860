"""The one place that builds the API clients from Settings and the environment.

Every command that talks to a service gets its client here, so pool sizes, timeouts, rate
budget and credentials are chosen once. This is the only module of ``migrate.clients`` that
reads :mod:`migrate.settings`; the clients themselves take plain values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from migrate.clients.bim360field import FieldSession
from migrate.clients.credentials import source_credentials, target_credentials
from migrate.clients.http import HttpClient, RetryPolicy
from migrate.clients.procore import ProcoreClient
from migrate.clients.ratebudget import RateBudget
from migrate.clients.sharedquota import spend_store_from_env
from migrate.settings import Settings


@contextlib.contextmanager
def field_session(
    settings: Settings, env: Mapping[str, str] = os.environ
) -> Iterator[FieldSession]:
    """A BIM 360 Field session for ``[source]`` (it logs in on first use); logged out and
    closed on leaving the block. Missing credentials raise ConfigError before any connection."""
    credentials = source_credentials(env)
    source = settings.source
    with HttpClient(
        source.base_url,
        policy=RetryPolicy(read_timeout=source.timeout),
        pool_size=max(4, source.workers),
        secrets=credentials.redaction_values(),
        setting="[source] base_url",
    ) as http:
        session = FieldSession(
            http, credentials.username, credentials.password, page_size=source.page_size
        )
        try:
            yield session
        finally:
            session.logout()


def procore_client(
    settings: Settings, env: Mapping[str, str] = os.environ, *, budget: RateBudget | None = None
) -> ProcoreClient:
    """The run's Procore client for ``[target]``: every REST call it makes draws on one rate
    budget (``budget``, or a new one, which spends the portfolio's shared quota when the
    environment names one: see :mod:`migrate.clients.sharedquota`). Use it as a context manager
    to close its connections."""
    if budget is None:
        budget = RateBudget(spend_store=spend_store_from_env(env))
    return ProcoreClient(settings.target, target_credentials(env), budget=budget)
