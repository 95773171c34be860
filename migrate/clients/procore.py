"""Procore REST client: OAuth tokens, company header, paging, rate budget, uploads.

One :class:`ProcoreClient` serves a whole run and may be shared by threads. Its HTTP goes
through three :class:`~migrate.clients.http.HttpClient` instances, so that each carries only
what belongs to it:

- ``api`` (``[target] base_url``): every REST call, with ``Authorization: Bearer …`` and
  ``Procore-Company-Id``, paced by the run's :class:`~migrate.clients.ratebudget.RateBudget`;
- ``auth`` (``[target] auth_url``): the token grant, which is not part of the REST quota;
- ``storage``: the upload form posted to the storage URL Procore hands out. Storage is not
  Procore: it gets neither the token nor the company header, and is not counted against the
  quota.

Tokens come from the client-credentials grant and are renewed shortly before they expire, and
when a call answers 401; a token given in ``PROCORE_ACCESS_TOKEN`` cannot be renewed.
Every token is registered with the HTTP layer as a secret, so no message or log line shows it.

A 401 is a credential error (exit 2) only where it proves the credentials wrong: the token
endpoint refusing the client id and secret, or Procore refusing a token given in
``PROCORE_ACCESS_TOKEN``. A 401 on a token Procore has just issued is not such proof: while
Procore is struggling (the moments a run spends backing off from 5xx) a fresh token can be
refused before every server knows it. That is a transient fault: the call backs off as the
retry policy says, gets a new token and tries again, up to ``max_attempts`` tokens; after
that it fails like any other service fault (exit 1, resumable).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, Protocol, cast
from urllib.parse import urlsplit

from migrate.clients.credentials import (
    PROCORE_ACCESS_TOKEN_ENV,
    PROCORE_CLIENT_ID_ENV,
    PROCORE_CLIENT_SECRET_ENV,
    TargetCredentials,
)
from migrate.clients.http import HttpClient, RetryPolicy, policy_for
from migrate.clients.ratebudget import RateBudget
from migrate.errors import (
    ApiError,
    ConfigError,
    CredentialError,
    UploadBytesMismatch,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger("migrate.procore")

#: PATCH /coordination_issues/sync takes at most this many items (seed 001, notes).
MAX_SYNC_ITEMS = 1000
#: Procore caps ``per_page`` at 100; asking for more would only be cut down.
MAX_PER_PAGE = 100
#: Ids per ``filters[ids][]`` query, so URLs stay short and a chunk fits one page.
IDS_PER_QUERY = 100
#: Renew a token this long before it expires (less for short lifetimes, see _refresh_margin).
REFRESH_MARGIN = 300.0

TOKEN_PATH = "/oauth/token"
COMPANIES_PATH = "/rest/v1.0/companies"
PROJECTS_PATH = "/rest/v1.0/projects"
ISSUES_PATH = "/rest/v1.0/coordination_issues"
SYNC_PATH = "/rest/v1.0/coordination_issues/sync"
ASSIGNEES_PATH = "/rest/v1.0/coordination_issues/assignees"

_CREDENTIAL_ERRORS = {"invalid_client", "unauthorized_client", "invalid_grant"}
_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|$)")


@dataclass(frozen=True)
class SyncResult:
    """What a sync call answered: the issues it created or updated, and the refused items.

    Each error is the submitted item plus ``"errors": {"<field>": ["message", …]}``.
    """

    entities: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Upload:
    """Where to post a file: ``url`` plus form ``fields`` to send back unaltered."""

    uuid: str
    url: str
    fields: dict[str, str]


class ProcoreTarget(Protocol):
    """Where and how hard to call Procore; ``[target]`` in migration.toml is one."""

    @property
    def base_url(self) -> str: ...

    @property
    def auth_url(self) -> str: ...

    @property
    def company_id(self) -> int | None: ...

    @property
    def workers(self) -> int: ...

    @property
    def timeout(self) -> float: ...


@dataclass
class _Token:
    value: str
    renew_at: float | None  # on the client's clock; None: never (a token given by the user)


class ProcoreClient:
    """Typed calls to Procore's REST API for one company (``settings.company_id``).

    ``budget`` paces every REST call; pass the run's shared one (a private budget is made when
    none is given). ``clock`` (monotonic seconds) decides when a token is due for renewal.
    """

    def __init__(
        self,
        settings: ProcoreTarget,
        credentials: TargetCredentials,
        *,
        budget: RateBudget | None = None,
        policy: RetryPolicy | None = None,
        pool_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.company_id = settings.company_id
        self.budget = budget if budget is not None else RateBudget()
        policy = policy or policy_for(settings)
        pool = pool_size or max(4, settings.workers)
        secrets = credentials.redaction_values()
        self.api = HttpClient(
            settings.base_url,
            policy=policy,
            pool_size=pool,
            secrets=secrets,
            hooks=[self.budget],
            setting="[target] base_url",
        )
        self.auth = HttpClient(
            settings.auth_url,
            policy=policy,
            pool_size=1,
            secrets=secrets,
            setting="[target] auth_url",
        )
        self.storage = HttpClient(settings.base_url, policy=policy, pool_size=pool, secrets=secrets)
        # A thread waiting for quota must not outlive the API being given up on.
        self.budget.stop_waiting_when(self.api.given_up)
        self._clock = clock
        self._token_lock = threading.Lock()
        self._token: _Token | None = None
        self._client_id = credentials.client_id
        self._client_secret = credentials.client_secret
        if credentials.access_token is not None:
            self._token = _Token(credentials.access_token.reveal(), None)
            self._add_secret(self._token.value)
        elif self._client_id is None or self._client_secret is None:
            raise ConfigError(
                f"No Procore credentials. Set {PROCORE_CLIENT_ID_ENV} and "
                f"{PROCORE_CLIENT_SECRET_ENV} in the environment, or {PROCORE_ACCESS_TOKEN_ENV}."
            )
        self._renewable = credentials.access_token is None

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        for client in (self.api, self.auth, self.storage):
            client.close()

    def __enter__(self) -> ProcoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters -------------------------------------------------------------------------
    def requests_made(self) -> dict[str, int]:
        """REST requests sent (retries included) by ``"METHOD /path"``, ids shown as ``{id}``."""
        counts: Counter[str] = Counter()
        for key, count in self.api.stats.snapshot()["requests"].items():
            counts[_NUMERIC_SEGMENT.sub("/{id}", key)] += count
        return dict(sorted(counts.items()))

    def request_counts(self) -> dict[str, int]:
        """Attempts (retries included) by ``"METHOD /path"`` over all three connections: REST,
        token grants and storage uploads, ids as sent. What a run records as its requests."""
        counts: Counter[str] = Counter()
        for client in (self.api, self.auth, self.storage):
            counts.update(client.stats.snapshot()["requests"])
        return dict(counts)

    def budget_figures(self) -> tuple[float, int]:
        """(seconds calls were held back by the rate budget, summed over threads; 429s seen)."""
        return float(self.budget.waited_seconds), int(self.budget.rate_limited)

    @property
    def token_requests(self) -> int:
        """Token grants requested so far (retries included)."""
        return self.auth.stats.total_requests

    # -- tokens -----------------------------------------------------------------------------
    def _add_secret(self, value: str) -> None:
        for client in (self.api, self.auth, self.storage):
            client.add_secret(value)

    def _current_token(self) -> str:
        with self._token_lock:
            token = self._token
            if token is None or (token.renew_at is not None and self._clock() >= token.renew_at):
                token = self._grant()
            return token.value

    def _renew_after_401(self, rejected: str, path: str, refusals: int) -> str:
        """A new token after ``rejected`` got the ``refusals``-th 401 of one call.

        The first 401 is an expired or revoked token: renew at once. A later one hit a token
        issued for this very call: back off first (a transient fault, see the module
        docstring), and give up as a service fault, not a credential error.
        """
        if not self._renewable:
            raise CredentialError(
                f"Procore rejected the access token in {PROCORE_ACCESS_TOKEN_ENV} (expired or "
                f"revoked). Set a fresh token, or unset {PROCORE_ACCESS_TOKEN_ENV} and set "
                f"{PROCORE_CLIENT_ID_ENV} and {PROCORE_CLIENT_SECRET_ENV} so tokens are renewed "
                "automatically."
            )
        if refusals > 1:
            if refusals > self.api.policy.max_attempts:
                raise ApiError(
                    f"Procore refused {refusals - 1} freshly issued tokens in a row on {path} "
                    "(HTTP 401) though its token endpoint accepted the credentials. What was "
                    "done so far is kept; run the same command again to resume. If this "
                    f"persists, check that the app is installed in company {self.company_id} "
                    "with access to this tool.",
                    status=401,
                    method="",
                    endpoint=path,
                )
            log.info("Procore refused a token it had just issued (on %s); backing off.", path)
            self.api.back_off(refusals - 1, "HTTP 401 on a fresh token")
        with self._token_lock:
            # Another thread may have renewed it already while this call was on the wire.
            if self._token is None or self._token.value == rejected:
                self._grant()
            assert self._token is not None
            return self._token.value

    def _grant(self) -> _Token:
        """Ask for a token with the client-credentials grant (token lock held)."""
        assert self._client_id is not None and self._client_secret is not None
        started = self._clock()
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id.reveal(),
            "client_secret": self._client_secret.reveal(),
        }
        response = self.auth.request("POST", TOKEN_PATH, data=form)
        body = _json_or_none(response)
        code = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 401 or (
            response.status_code == 400 and code in _CREDENTIAL_ERRORS
        ):
            raise CredentialError(
                f"Procore refused the client credentials in {PROCORE_CLIENT_ID_ENV} / "
                f"{PROCORE_CLIENT_SECRET_ENV} ({code or f'HTTP {response.status_code}'}). Check "
                f"both against the app in Procore's developer portal, and that [target] auth_url "
                f"({self.auth.base_url}) is the login host for that app, then run the command "
                "again."
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise ApiError(
                status=response.status_code,
                method="POST",
                endpoint=self.auth.url_for(TOKEN_PATH),
                body=self.auth.redact(
                    response.text
                    if response.status_code != 200
                    else "the answer holds no access_token"
                ),
            )
        self._add_secret(token)
        assert isinstance(body, dict)
        lifetime = _seconds(body.get("expires_in"))
        renew_at = None if lifetime is None else started + lifetime - _refresh_margin(lifetime)
        self._token = _Token(token, renew_at)
        log.info(
            "Procore token obtained (valid for %s).",
            "an unknown time" if lifetime is None else f"{lifetime:.0f} s",
        )
        return self._token

    def check_access(self, project_id: int) -> dict[str, Any]:
        """One cheap call before a stage's work (Show Project, seed 002) that proves the
        credentials, ``[target] company_id`` and ``project_id`` even when there is nothing
        to send. A refusal is a setting to fix (exit 2) naming the setting; a 401 is a
        credential error (see _grant). Counted against the quota like any REST call."""
        url = f"{PROJECTS_PATH}/{project_id}"
        response = self._send(
            "GET", url, params={"company_id": self.company_id}, ok=(200, 403, 404)
        )
        status = response.status_code
        if status == 200:
            return cast(dict[str, Any], self._json(response, url))
        answer = self.auth.redact(_error_text(response))
        if status == 404:
            raise ConfigError(
                f"[target] project_id = {project_id} was not found (404: {answer}) in Procore "
                f"company {self.company_id}. Set project_id to the number in the project's "
                "Procore URL, then run the command again."
            )
        raise ConfigError(
            f"[target] company_id = {self.company_id} was refused (403: {answer}): the app has "
            f"no access to that company, or project_id = {project_id} is not in it. Check "
            "both in migration.toml and that the app is installed in the company, then run "
            "the command again."
        )

    # -- plumbing -----------------------------------------------------------------------------
    def _headers(self, token: str, company: bool | int) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if company is not False:
            company_id = self.company_id if company is True else company
            if company_id is None:
                raise ConfigError(
                    "[target] company_id is not set. Procore needs it on every call but the "
                    "company list; add company_id = <number> (from the Procore URL) to "
                    "migration.toml."
                )
            headers["Procore-Company-Id"] = str(company_id)
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        ok: Sequence[int] = (200,),
        company: bool | int = True,
        replay: bool = True,
        settle: bool = False,
    ) -> requests.Response:
        """One REST call; a 401 gets a new token (see _renew_after_401). Other statuses outside
        ``ok`` raise. ``replay``: see HttpClient.request."""
        token = self._current_token()
        refusals = 0
        while True:
            response = self.api.request(
                method,
                path,
                params=params,
                json=json,
                headers=self._headers(token, company),
                ok=(*ok, 401),
                replay=replay,
                settle=settle,
            )
            if response.status_code != 401:
                return response
            response.close()
            refusals += 1
            token = self._renew_after_401(token, _endpoint(path), refusals)

    def _json(self, response: requests.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"Procore {_endpoint(path)} answered HTTP {response.status_code} with a body "
                "that is not JSON. This is unexpected; keep the log, then run the same command "
                "again to resume."
            ) from None

    def _same_origin(self, url: str) -> str:
        """``url`` if it is on the API host: the token must never go anywhere else."""
        ours, theirs = urlsplit(self.api.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise ApiError(
                f"Procore's next-page link points to {theirs.scheme}://{theirs.netloc}, not "
                f"{ours.scheme}://{ours.netloc}; refusing to send the token there. Check "
                "[target] base_url."
            )
        return url

    # -- paging -------------------------------------------------------------------------------
    def list_paged(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        per_page: int = MAX_PER_PAGE,
        *,
        company: bool | int = True,
    ) -> Iterator[list[Any]]:
        """Yield each page of a list endpoint, following ``Link: <…>; rel="next"``.

        Without a Link header, pages are counted against ``Total``; without either, the
        answer is one page. A next link seen before stops with an ApiError rather than loop.
        """
        query: dict[str, Any] = {**(params or {}), "per_page": max(1, min(per_page, MAX_PER_PAGE))}
        page = int(query.pop("page", 1))
        url: str = path
        args: dict[str, Any] | None = {**query, "page": page}
        seen: set[str] = set()
        fetched = 0
        while True:
            response = self._send("GET", url, params=args, company=company)
            rows = self._json(response, path)
            if not isinstance(rows, list):
                raise ApiError(
                    f"Procore {_endpoint(path)} answered with a {type(rows).__name__} where a "
                    "list was expected. This is unexpected; keep the log and report it."
                )
            yield rows
            fetched += len(rows)
            next_link = response.links.get("next", {}).get("url")
            if next_link:
                if next_link in seen:
                    raise ApiError(
                        f"Procore {_endpoint(path)} sent the same next-page link twice "
                        f"(page after {fetched} rows); stopped rather than loop. Run the "
                        "command again; if it recurs, keep the log and report it."
                    )
                seen.add(next_link)
                url, args = self._same_origin(next_link), None
                continue
            if response.headers.get("Link") is not None:
                return  # a Link header without rel="next": that was the last page
            total = _int(response.headers.get("Total"))
            if total is None or not rows or fetched >= total:
                return
            page += 1
            url, args = path, {**query, "page": page}

    def _all(
        self, path: str, params: Mapping[str, Any] | None = None, *, company: bool | int = True
    ) -> list[Any]:
        return [row for page in self.list_paged(path, params, company=company) for row in page]

    # -- companies, projects, people ---------------------------------------------------------
    def companies(self) -> list[dict[str, Any]]:
        """Companies the token can see (the one call that needs no company header)."""
        return self._all(COMPANIES_PATH, company=False)

    def projects(self, company_id: int) -> list[dict[str, Any]]:
        """Projects of ``company_id``."""
        return self._all(PROJECTS_PATH, {"company_id": company_id}, company=company_id)

    def project_users(self, project_id: int) -> list[dict[str, Any]]:
        """People in the project's directory (``email_address``, ``vendor``)."""
        return self._all(f"{PROJECTS_PATH}/{project_id}/users")

    def assignees(self, project_id: int) -> list[dict[str, Any]]:
        """Who may be assigned coordination issues (``id, name, login`` = email)."""
        return self._all(ASSIGNEES_PATH, {"project_id": project_id})

    # -- locations ----------------------------------------------------------------------------
    def locations(self, project_id: int, **filters: Any) -> list[dict[str, Any]]:
        """The project's locations; ``parent_id=…``, ``search=…`` become ``filters[…]``."""
        return self._all(f"{PROJECTS_PATH}/{project_id}/locations", _filters(filters))

    def find_or_create_location(
        self, project_id: int, path: Sequence[str]
    ) -> tuple[dict[str, Any], bool]:
        """The leaf location of ``path`` (root first), and whether Procore had to create it.

        Missing ancestors are created too. Safe to repeat: if an answer is lost and the call is
        retried, the retry finds the location (and reports it as not created).
        """
        if (
            isinstance(path, str)
            or not path
            or any(not isinstance(name, str) or not name.strip() for name in path)
        ):
            raise ValueError(
                f"a location path is a non-empty list of non-blank names, got {path!r}"
            )
        url = f"{PROJECTS_PATH}/{project_id}/locations/find_or_create_by_path"
        response = self._send("POST", url, json={"location": {"path": list(path)}}, ok=(200, 201))
        return self._json(response, url), response.status_code == 201

    # -- coordination issues ------------------------------------------------------------------
    def coordination_issues(
        self,
        project_id: int,
        *,
        ids: Iterable[int] | None = None,
        search: str | None = None,
        updated_at: str | tuple[Any, Any] | None = None,
        view: str = "extended",
    ) -> list[dict[str, Any]]:
        """Coordination issues of a project, optionally filtered.

        ``ids`` are asked for in chunks; ``updated_at`` is ``"start...end"`` or a
        ``(start, end)`` pair of ISO strings, dates or datetimes. ``view="extended"`` includes
        attachments; ``normal`` omits them, ``compact`` holds only ids.
        """
        params: dict[str, Any] = {"project_id": project_id, "view": view}
        if search is not None:
            params["filters[search]"] = search
        if updated_at is not None:
            params["filters[updated_at]"] = _date_range(updated_at)
        if ids is None:
            return self._all(ISSUES_PATH, params)
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            found.extend(self._all(ISSUES_PATH, {**params, "filters[ids][]": chunk}))
        return found

    def show_issue(self, project_id: int, issue_id: int) -> dict[str, Any]:
        """One coordination issue, extended view (attachments included). 404 is an ApiError."""
        url = f"{ISSUES_PATH}/{issue_id}"
        response = self._send("GET", url, params={"project_id": project_id, "view": "extended"})
        return cast(dict[str, Any], self._json(response, url))

    def sync_issues(
        self, project_id: int, items: Sequence[dict[str, Any]], *, resend: bool = True
    ) -> SyncResult:
        """Create (items without ``id``) and update (items with ``id``) up to 1000 issues.

        Refused items come back in ``errors`` as data; only envelope problems (no such
        project, no permission, malformed call) raise ApiError. Batching is the caller's job:
        more than 1000 items is a ValueError, raised before any request.

        A sync whose answer is lost is sent again by the HTTP layer (PATCH is retried), so an
        item may already have been created by the first attempt. That is safe when creates
        carry a deterministic ``uuid``: the repeat answers that item with the per-item error
        ``{"uuid": ["has already been taken"]}``, and the caller looks the issue up and records
        it instead of creating it twice. Where Procore was not seen to refuse a reused uuid,
        pass ``resend=False``: a sync that may have been applied raises TransportError instead
        of going out again, and the caller looks its uuids up first.
        """
        if len(items) > MAX_SYNC_ITEMS:
            raise ValueError(
                f"a sync takes at most {MAX_SYNC_ITEMS} items, got {len(items)}; "
                "split them into batches"
            )
        if not items:
            return SyncResult()
        response = self._send(
            "PATCH",
            SYNC_PATH,
            json={"project_id": project_id, "updates": list(items)},
            replay=resend,
        )
        body = self._json(response, SYNC_PATH)
        entities = body.get("entities") if isinstance(body, dict) else None
        errors = body.get("errors", []) if isinstance(body, dict) else None
        if not isinstance(entities, list) or not isinstance(errors, list):
            raise ApiError(
                f"Procore {SYNC_PATH} answered without the entities and errors lists. This is "
                "unexpected; keep the log, then run the same command again to resume."
            )
        return SyncResult(entities, errors)

    def update_issue(
        self, project_id: int, issue_id: int, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update one issue (the only way to change its status). 422 is an ApiError."""
        url = f"{ISSUES_PATH}/{issue_id}"
        response = self._send(
            "PATCH", url, json={"project_id": project_id, "coordination_issue": dict(fields)}
        )
        return cast(dict[str, Any], self._json(response, url))

    def create_issue(self, project_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create one issue (the naive baseline; the pipeline uses :meth:`sync_issues`).

        A create whose answer is lost is retried, like every POST: without a ``uuid`` in
        ``fields`` that can create the issue twice; with one, the repeat answers 422.
        """
        response = self._send(
            "POST",
            ISSUES_PATH,
            json={"project_id": project_id, "coordination_issue": dict(fields)},
            ok=(200, 201),
        )
        return cast(dict[str, Any], self._json(response, ISSUES_PATH))

    # -- inspections: read back ---------------------------------------------------------------
    # Load reads a new inspection's items to answer them; the report reads everything back to
    # reconcile it with the source. Ids are asked for in chunks, like coordination issues.
    def _all_by_ids(
        self, path: str, key: str, ids: Iterable[int] | None, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        if ids is None:
            return self._all(path, params)
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), IDS_PER_QUERY):
            chunk = wanted[start : start + IDS_PER_QUERY]
            found.extend(self._all(path, {**params, **_filters({key: chunk})}))
        return found

    def inspections(
        self, project_id: int, *, ids: Iterable[int] | None = None
    ) -> list[dict[str, Any]]:
        """The project's inspections (checklist lists), all or those with ``ids``."""
        return self._all_by_ids(f"{PROJECTS_PATH}/{project_id}/checklist/lists", "id", ids, {})

    def inspection_items(self, project_id: int, list_ids: Iterable[int]) -> list[dict[str, Any]]:
        """The items of the inspections ``list_ids`` (v1.1: ``item_response``, ``type``,
        ``template_item_id``, ``section_id``)."""
        path = f"/rest/v1.1/projects/{project_id}/checklist/list_items"
        return self._all_by_ids(path, "list_id", list_ids, {})

    def inspection_item_comments(
        self, project_id: int, item_ids: Iterable[int]
    ) -> list[dict[str, Any]]:
        """Comments on the inspection items ``item_ids``."""
        path = f"{PROJECTS_PATH}/{project_id}/checklist/list_item_comments"
        return self._all_by_ids(path, "item_id", item_ids, {})

    def inspection_item_attachments(
        self, project_id: int, item_ids: Iterable[int]
    ) -> list[dict[str, Any]]:
        """Files on the inspection items ``item_ids`` (``attachment`` holds name and url)."""
        path = f"{PROJECTS_PATH}/{project_id}/checklist/list_item_attachments"
        return self._all_by_ids(path, "item_id", item_ids, {})

    # -- inspections: building blocks and writes (load) -----------------------------------------
    # Every write answers the created object, or raises InspectionRefused (422 with Procore's
    # ``errors``) for the loader to quarantine; other statuses raise ApiError as everywhere.
    # These creates carry no idempotency key: a POST whose answer is lost raises AnswerLost
    # instead of being sent again, and the loader looks for what it made (load/inspections.py).
    def _write(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        files: Any = None,
        data: Any = None,
        replay: bool | None = None,
    ) -> Any:
        if files is None:
            response = self._send(
                method,
                path,
                json=json,
                params=params,
                ok=(200, 201, 422),
                replay=method != "POST" if replay is None else replay,
                # A status change Procore applies late would undo a later one (reopen after
                # close): every inspection write waits out a timed-out attempt.
                settle=True,
            )
        else:
            response = self._send_form(path, data=data, files=files)
        body = _json_or_none(response)
        if response.status_code == 422:
            errors = body.get("errors") if isinstance(body, dict) else None
            raise InspectionRefused(errors if errors is not None else body, _endpoint(path))
        if body is None:
            return self._json(response, path)
        return body

    def _send_form(self, path: str, *, data: Any, files: Any) -> requests.Response:
        """A multipart POST (item attachments); a 401 gets a new token like _send."""
        token = self._current_token()
        refusals = 0
        while True:
            response = self.api.request(
                "POST",
                path,
                data=data,
                files=files,
                headers=self._headers(token, True),
                ok=(200, 201, 422, 401),
                replay=False,
            )
            if response.status_code != 401:
                return response
            response.close()
            refusals += 1
            token = self._renew_after_401(token, _endpoint(path), refusals)

    def item_types(self) -> list[dict[str, Any]]:
        """The checklist item types (``id, category, name``): look them up by name."""
        return self._all("/rest/v1.0/checklist/item_types", {"company_id": self.company_id})

    def vendors(self, project_id: int) -> list[dict[str, Any]]:
        """The project's vendors (``id, name``): who can be an inspection's responsible
        contractor."""
        return self._all(f"{PROJECTS_PATH}/{project_id}/vendors")

    def _company_path(self, tail: str) -> str:
        return f"{COMPANIES_PATH}/{self.company_id}/{tail}"

    def inspection_types(self) -> list[dict[str, Any]]:
        """The company's inspection types."""
        return self._all(self._company_path("inspection_types"))

    def create_inspection_type(self, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                self._company_path("inspection_types"),
                json={"inspection_type": {"name": name}},
            ),
        )

    def response_sets(self) -> list[dict[str, Any]]:
        """The company's item response sets, each with its ``responses``."""
        return self._all(self._company_path("checklist/item/response_sets"))

    def create_response_set(
        self, name: str, responses: Sequence[Mapping[str, str]]
    ) -> dict[str, Any]:
        """A response set; ``responses`` are ``{name, corresponding_status}`` (yes/no/n/a)."""
        body = {
            "response_set": {
                "name": name,
                "active": True,
                "memberships_attributes": [
                    {
                        "response_attributes": {
                            "name": r["name"],
                            "corresponding_status": r["corresponding_status"],
                        }
                    }
                    for r in responses
                ],
            }
        }
        return cast(
            dict[str, Any],
            self._write("POST", self._company_path("checklist/item/response_sets"), json=body),
        )

    def company_templates(self, query: str | None = None) -> list[dict[str, Any]]:
        """Company inspection templates (``filters[query]`` on the name)."""
        params = {"filters[query]": query} if query else {}
        return self._all(self._company_path("checklist/list_templates"), params)

    def create_company_template(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                self._company_path("checklist/list_templates"),
                json={"list_template": dict(fields)},
            ),
        )

    def company_template_sections(self, template_id: int) -> list[dict[str, Any]]:
        return self._all(self._company_path(f"checklist/list_templates/{template_id}/sections"))

    def create_company_template_section(
        self, template_id: int, name: str, position: int
    ) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                self._company_path(f"checklist/list_templates/{template_id}/sections"),
                json={"section": {"name": name, "position": position}},
            ),
        )

    def company_template_items(self, template_id: int) -> list[dict[str, Any]]:
        return self._all(self._company_path(f"inspection_templates/{template_id}/items"))

    def create_company_template_item(
        self, template_id: int, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``fields``: name, position, section_id, type, response_set_id (multiple choice)."""
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                self._company_path(f"inspection_templates/{template_id}/items"),
                json={"inspection_template_item": dict(fields)},
            ),
        )

    def create_project_template_from_company(
        self, project_id: int, company_template_id: int
    ) -> dict[str, Any]:
        """The project copy of a company template (422 if the project has one already)."""
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                f"{PROJECTS_PATH}/{project_id}/checklist/list_templates/"
                "create_from_company_template",
                json={"source_template_id": company_template_id},
                replay=True,  # a repeat is refused (one copy per project): safe to send again
            ),
        )

    def project_templates(self, project_id: int) -> list[dict[str, Any]]:
        """Project templates (``synced_to.list_template_id``: the company template)."""
        return self._all(f"{PROJECTS_PATH}/{project_id}/checklist/list_templates")

    def project_template(self, project_id: int, template_id: int) -> dict[str, Any]:
        """One project template with its sections and items (``synced_to.item_id``)."""
        url = f"/rest/v1.1/projects/{project_id}/checklist/list_templates/{template_id}"
        return cast(dict[str, Any], self._json(self._send("GET", url), url))

    def inspections_matching(
        self, project_id: int, *, query: str | None, template_id: int | None
    ) -> list[dict[str, Any]]:
        """Inspections whose name, identifier or description holds ``query``, of a template."""
        params: dict[str, Any] = {}
        if query:
            params["filters[query]"] = query
        if template_id is not None:
            params["filters[template_id]"] = template_id
        return self._all(f"{PROJECTS_PATH}/{project_id}/checklist/lists", params)

    def create_inspection(
        self, project_id: int, list_template_id: int, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new inspection from a project template (its items are copied; read them back)."""
        url = f"/rest/v1.1/projects/{project_id}/checklist/lists"
        return cast(
            dict[str, Any],
            self._write(
                "POST", url, json={"list_template_id": list_template_id, "list": dict(fields)}
            ),
        )

    def update_inspection(
        self, project_id: int, list_id: int, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        url = f"/rest/v1.1/projects/{project_id}/checklist/lists/{list_id}"
        # upload_ids attach files: an update carrying them must not be applied twice.
        return cast(
            dict[str, Any],
            self._write(
                "PATCH", url, json={"list": dict(fields)}, replay=not fields.get("upload_ids")
            ),
        )

    def close_inspection(self, project_id: int, list_id: int) -> dict[str, Any]:
        url = f"/rest/v1.1/projects/{project_id}/checklist/lists/{list_id}/close"
        return cast(dict[str, Any], self._write("PATCH", url))

    def reopen_inspection(self, project_id: int, list_id: int) -> dict[str, Any]:
        url = f"/rest/v1.1/projects/{project_id}/checklist/lists/{list_id}/reopen"
        return cast(dict[str, Any], self._write("PATCH", url))

    def answer_item(
        self, project_id: int, item_id: int, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One item response: ONE of status, response_option_id, text/number/date_value."""
        url = f"{PROJECTS_PATH}/{project_id}/checklist/items/{item_id}/item_response"
        return cast(dict[str, Any], self._write("POST", url, json={"item_response": dict(payload)}))

    def item_response(self, project_id: int, item_id: int) -> dict[str, Any] | None:
        """An item's response, or None when it has none (404)."""
        url = f"{PROJECTS_PATH}/{project_id}/checklist/items/{item_id}/item_response"
        response = self._send("GET", url, ok=(200, 404))
        if response.status_code == 404:
            return None
        return cast(dict[str, Any], self._json(response, url))

    def comment_item(
        self, project_id: int, list_id: int, item_id: int, body: str
    ) -> dict[str, Any]:
        url = f"/rest/v1.0/checklist/lists/{list_id}/comments"
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                url,
                json={"project_id": project_id, "item_id": item_id, "comment": {"body": body}},
            ),
        )

    def attach_item_file(
        self,
        project_id: int,
        list_id: int,
        item_id: int,
        section_id: int,
        *,
        name: str,
        content_type: str,
        source: BinaryIO,
    ) -> dict[str, Any]:
        """One file on an item (multipart, no upload step); answers ``{id, attachment}``."""
        url = f"/rest/v1.0/checklist/lists/{list_id}/items/{item_id}/item_attachments"
        return cast(
            dict[str, Any],
            self._write(
                "POST",
                url,
                data={"project_id": str(project_id), "section_id": str(section_id)},
                files={"attachment": (name, source, content_type)},
            ),
        )

    def attach_inspection_upload(
        self, project_id: int, list_id: int, upload_id: str
    ) -> dict[str, Any]:
        """A stored upload on an inspection (after create; at create pass ``upload_ids``)."""
        url = f"{PROJECTS_PATH}/{project_id}/checklist/lists/{list_id}/attachments"
        return cast(
            dict[str, Any],
            self._write("POST", url, json={"attachment": {"upload_id": upload_id}}),
        )

    # -- uploads ------------------------------------------------------------------------------
    def create_upload(self, project_id: int, filename: str, content_type: str) -> Upload:
        """Ask where to store a file; post it with :meth:`put_upload_bytes` within an hour."""
        url = f"/rest/v1.1/projects/{project_id}/uploads"
        response = self._send(
            "POST",
            url,
            json={"response_filename": filename, "response_content_type": content_type},
            ok=(200, 201),
        )
        body = self._json(response, url)
        if not (
            isinstance(body, dict)
            and isinstance(body.get("uuid"), str)
            and isinstance(body.get("url"), str)
            and isinstance(body.get("fields"), dict)
        ):
            raise ApiError(
                f"Procore {url} answered without uuid, url and fields. This is unexpected; keep "
                "the log, then run the same command again to resume."
            )
        fields = {str(k): str(v) for k, v in body["fields"].items()}
        return Upload(body["uuid"], body["url"], fields)

    def put_upload_bytes(
        self, upload: Upload, source: BinaryIO, *, sha256: str, size: int | None = None
    ) -> SentFile:
        """Post ``source`` to storage as ``upload`` says, proving the bytes as they go out.

        ``source`` (open for binary reading, from its start) is hashed while the request
        streams it, and the last bytes of the file part are released only once the sha256 of
        everything read equals ``sha256``. On a mismatch :class:`UploadBytesMismatch` is raised
        and the connection is dropped mid-body, so storage never receives a whole wrong file;
        a ``size`` that differs from the source's is refused before anything is sent. Returns
        the size and the sha256 of what storage received.

        The form carries every field unaltered, then the file as the part named ``file``.
        Storage gets no Procore token, no company header, and does not count against the rate
        budget. A refusal raises ApiError with its status: 403 means the upload expired (an
        hour after creation): create a new one.
        """
        body = _MultipartFile(upload.fields, source, sha256, expected_size=size)
        self.storage.request(
            "POST",
            upload.url,
            data=body,
            headers={"Content-Type": body.content_type},
            ok=range(200, 300),
        )
        return SentFile(size=body.file_size, sha256=body.proven_sha256())

    # -- trades (issue 15) ----------------------------------------------------------------
    def trades(self, company_id: int) -> list[dict[str, Any]]:
        """The company's trades (``id, name, active``): what a coordination issue's
        ``trade_id`` names."""
        return self._all(f"{COMPANIES_PATH}/{company_id}/trades", company=company_id)

    # -- preflight (issue 16): answers taken as they are, for migrate/preflight.py --------------
    def probe(
        self, path: str, params: Mapping[str, Any] | None = None, *, company: bool | int = True
    ) -> ProbeAnswer:
        """One GET of the first row of a list, answered as it is: 403, 404 and other refusals
        are data here, not errors. Carries the ``Total`` and the rate-limit headers seen."""
        response = self._send(
            "GET", path, params={**(params or {}), "per_page": 1}, ok=_ANSWERED, company=company
        )
        headers = response.headers
        body = _json_or_none(response)
        total = _int(headers.get("Total"))
        if total is None and isinstance(body, list):
            total = len(body)
        return ProbeAnswer(
            status=response.status_code,
            total=total,
            rate_limit=_int(headers.get("X-Rate-Limit-Limit")),
            rate_remaining=_int(headers.get("X-Rate-Limit-Remaining")),
            rate_reset=_int(headers.get("X-Rate-Limit-Reset")),
            seen_at=time.time(),
        )

    def sync_status_as_text(self, project_id: int) -> int:
        """An empty sync sent as ``text/plain`` (seeds 000/001 require application/json): the
        HTTP status answered. Nothing is created: the update list is empty."""
        body = json.dumps({"project_id": project_id, "updates": []})
        token = self._current_token()
        headers = {**self._headers(token, True), "Content-Type": "text/plain"}
        response = self.api.request("PATCH", SYNC_PATH, data=body, headers=headers, ok=_ANSWERED)
        response.close()
        return response.status_code

    def delete_issue(self, project_id: int, issue_id: int) -> int:
        """Delete one coordination issue (preflight's clean-up); the HTTP status answered."""
        url = f"{ISSUES_PATH}/{issue_id}"
        response = self._send("DELETE", url, params={"project_id": project_id}, ok=_ANSWERED)
        response.close()
        return response.status_code


class InspectionRefused(ApiError):
    """Procore refused an inspection write (422); ``errors`` is its ``errors`` object."""

    def __init__(self, errors: Any, endpoint: str) -> None:
        self.errors = errors
        super().__init__(f"Procore refused {endpoint}: {errors}", status=422, endpoint=endpoint)


# -- multipart, streamed ----------------------------------------------------------------------


@dataclass(frozen=True)
class SentFile:
    """What storage received for an upload: size in bytes and sha256, hashed as it streamed."""

    size: int
    sha256: str


class _MultipartFile:
    """A multipart/form-data body that reads the file part as it is sent, and proves it.

    It behaves as a file (read/seek/tell, so the HTTP layer can rewind it for a retry) with a
    known length, so the request carries Content-Length, which storage requires. The file part
    is hashed in order as it is read (from the start again after a rewind); the read that would
    complete it raises UploadBytesMismatch instead unless the digest is the expected one. That
    exception is neither an OSError nor a requests error, so the HTTP layer neither retries nor
    wraps it and urllib3 closes the half-sent connection.
    """

    def __init__(
        self,
        fields: Mapping[str, str],
        source: BinaryIO,
        sha256: str,
        *,
        expected_size: int | None = None,
    ) -> None:
        self._handle = source
        self._expected = sha256
        source.seek(0, os.SEEK_END)
        self.file_size = source.tell()
        source.seek(0)
        if expected_size is not None and self.file_size != expected_size:
            raise UploadBytesMismatch(
                f"has {self.file_size} bytes, not the {expected_size} expected",
                expected=sha256,
                actual=None,
            )
        self.boundary = uuidlib.uuid4().hex
        parts = [
            (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'
            ).encode()
            + value.encode("utf-8")
            + b"\r\n"
            for name, value in fields.items()
        ]
        content_type = fields.get("Content-Type") or "application/octet-stream"
        # The part's filename is the digest: storage names the file from the signed fields.
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{sha256}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        self._head = b"".join(parts)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._length = len(self._head) + self.file_size + len(self._tail)
        self._position = 0
        self._digest = hashlib.sha256()
        self._hashed = 0  # bytes of the file part in _digest, read in order from offset 0
        self._proven = False

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1024 * 1024):
            yield chunk

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._length}[whence]
        self._position = max(0, min(self._length, base + offset))
        return self._position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._position
        out = bytearray()
        while size > 0 and self._position < self._length:
            head, file_end = len(self._head), len(self._head) + self.file_size
            if self._position < head:
                piece = self._head[self._position : self._position + size]
            elif self._position < file_end:
                offset = self._position - head
                self._hash_up_to(offset)
                piece = self._handle.read(min(size, file_end - self._position))
                if not piece:
                    self._refuse("got shorter while it was being sent")
                self._digest.update(piece)
                self._hashed += len(piece)
                if self._hashed == self.file_size:
                    self._prove()  # before these last bytes of the file leave
            else:
                if not self._proven:  # an empty file, or a seek past the file part
                    self._hash_up_to(self.file_size)
                    self._prove()
                start = self._position - file_end
                piece = self._tail[start : start + size]
            out += piece
            self._position += len(piece)
            size -= len(piece)
        return bytes(out)

    def _hash_up_to(self, offset: int) -> None:
        """Have the digest cover the file's bytes before ``offset`` and the handle sit there."""
        if offset < self._hashed:  # rewound for a retry: hash the file again from its start
            self._digest = hashlib.sha256()
            self._hashed = 0
            self._proven = False
        self._handle.seek(self._hashed)
        while self._hashed < offset:
            chunk = self._handle.read(min(1 << 20, offset - self._hashed))
            if not chunk:
                self._refuse("got shorter while it was being sent")
            self._digest.update(chunk)
            self._hashed += len(chunk)

    def _prove(self) -> None:
        actual = self._digest.hexdigest()
        if actual != self._expected:
            raise UploadBytesMismatch(
                f"has sha256 {actual}, not the {self._expected} expected",
                expected=self._expected,
                actual=actual,
            )
        self._proven = True

    def _refuse(self, why: str) -> NoReturn:
        raise UploadBytesMismatch(why, expected=self._expected, actual=None)

    def proven_sha256(self) -> str:
        """The sha256 of the whole file part as last sent; only once it has been proven."""
        if not self._proven:
            raise RuntimeError("the file part was not sent whole")
        return self._digest.hexdigest()


def _quoted(value: str) -> str:
    # What browsers (and urllib3) do to a form field name or filename in Content-Disposition.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# -- small helpers ----------------------------------------------------------------------------


def _endpoint(path: str) -> str:
    return urlsplit(path).path or path


def _refresh_margin(lifetime: float) -> float:
    """Renew 5 minutes early, or a tenth of the lifetime when that is shorter."""
    return min(REFRESH_MARGIN, lifetime / 10)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _error_text(response: requests.Response, limit: int = 120) -> str:
    """A refusal's reason on one short line: ``{"errors": "..."}`` as its text, else the body."""
    body = _json_or_none(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    text = errors if isinstance(errors, str) else response.text
    text = " ".join(text.split()) or "empty answer"
    return text if len(text) <= limit else text[:limit] + "…"


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | set):
            params[f"filters[{key}][]"] = list(value)
        else:
            params[f"filters[{key}]"] = value
    return params


def _date_range(value: str | tuple[Any, Any]) -> str:
    if isinstance(value, str):
        return value
    start, end = value
    return f"{_iso(start)}...{_iso(end)}"


def _iso(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# -- preflight (issue 16) ----------------------------------------------------------------------

#: Statuses a preflight probe takes as answers (401 renews the token, 429 waits, 5xx retries).
_ANSWERED = tuple(status for status in range(200, 500) if status not in (401, 429))


@dataclass(frozen=True)
class ProbeAnswer:
    """What one probing GET saw: its status, the list's total, the rate-limit headers."""

    status: int
    total: int | None
    rate_limit: int | None
    rate_remaining: int | None
    rate_reset: int | None
    #: Wall-clock time of the answer (X-Rate-Limit-Reset is Unix seconds).
    seen_at: float
