"""Exceptions the library raises and the exit codes the CLI maps them to.

Every message is one line that says what went wrong, which value, and what to do next; the CLI
prints it as ``Error: …`` without a traceback. Messages that may carry URLs or response bodies
are redacted by ``migrate.clients.http`` before they get here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Everything finished.
EXIT_OK = 0
#: A stage failed; what it had done is kept and running the same command resumes it.
EXIT_FAILED = 1
#: Usage, configuration or credential problem: fix the input, then run again.
EXIT_USAGE = 2
#: Finished, but some records were quarantined (see the report).
EXIT_QUARANTINED = 3
#: Stopped by Ctrl-C (128 + SIGINT, as shells report it); what was done is kept.
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class ExitCode:
    """One row of the exit-code table: the code, a short name and what it tells the engineer."""

    code: int
    name: str
    meaning: str


#: THE exit-code table: `migrate --help`, every command's help and the README render it, and
#: every command exits with one of these codes (tests/test_exit_codes.py walks them).
EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(EXIT_OK, "ok", "everything done (preflight: go; report: Procore matches staging)"),
    ExitCode(
        EXIT_FAILED,
        "failed",
        "a stage stopped partway, a check failed (preflight no-go, report mismatches) or the "
        "disk or staging DB failed: what was done is kept; the message names the command to "
        "run again",
    ),
    ExitCode(
        EXIT_USAGE,
        "usage",
        "usage, configuration, mapping or credential error, or a setting the target refuses "
        "(project or company not found, auth_url unreachable): one line naming what to fix",
    ),
    ExitCode(
        EXIT_QUARANTINED,
        "quarantined",
        "finished, but records are in quarantine (`migrate quarantine list`); every command "
        "that ends a pipeline run (transform, load, run, run --dry-run, report, demo) exits 3 "
        "while any quarantine row is open",
    ),
    ExitCode(
        EXIT_INTERRUPTED,
        "interrupted",
        "stopped by Ctrl-C: what was done is kept; the message gives the command to resume",
    ),
)


def exit_code_row(code: int) -> ExitCode:
    """The table's row for ``code`` (a KeyError for a code the table does not hold)."""
    for row in EXIT_CODES:
        if row.code == code:
            return row
    raise KeyError(f"exit code {code} is not in migrate.errors.EXIT_CODES")


def exit_codes_markdown() -> str:
    """The table as the README prints it (tests/test_exit_codes.py keeps the README equal)."""
    lines = ["| code | meaning |", "| --- | --- |"]
    lines += [f"| {row.code} | {row.meaning} |" for row in EXIT_CODES]
    return "\n".join(lines)


def worst_exit_code(*codes: int) -> int:
    """The code a command that ran several steps exits with: failed > quarantined > ok."""
    for severe in (EXIT_INTERRUPTED, EXIT_USAGE, EXIT_FAILED, EXIT_QUARANTINED):
        if severe in codes:
            return severe
    return EXIT_OK


_WHITESPACE = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse newlines and runs of whitespace so a message prints as a single line."""
    return _WHITESPACE.sub(" ", text).strip()


class MigrateError(Exception):
    """Base of every error the CLI reports as ``Error: <message>`` with ``exit_code``."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    @property
    def message(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return one_line(str(self.args[0])) if self.args else ""


class ConfigError(MigrateError):
    """The configuration file, an option or an environment variable is wrong or missing."""

    exit_code = EXIT_USAGE


class CredentialError(MigrateError):
    """A service rejected the credentials (login refused, token request denied)."""

    exit_code = EXIT_USAGE


class IdentityMismatch(MigrateError):
    """The staging DB belongs to another source or target project than the one configured."""

    exit_code = EXIT_USAGE


class StagingRefused(MigrateError):
    """The staging path names something migrate did not make (another file, a symlink).

    Raised before anything is written: the file keeps its bytes, mode and side files.
    """

    exit_code = EXIT_USAGE


class StagingNotReady(MigrateError):
    """The staging DB is missing or holds nothing for this command: another command comes first."""

    exit_code = EXIT_USAGE


class WriterBusy(MigrateError):
    """Another migrate command is writing to the same staging DB; nothing was changed."""

    exit_code = EXIT_USAGE


class EnvironmentFault(MigrateError):
    """The disk, a folder or the staging DB file failed (full, read-only, corrupt, no access).

    What was recorded before the fault is kept; fix the named path and run the command again.
    ``path`` is the file or folder that failed, ``details`` where the traceback was written.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, path: str = "", details: str = "") -> None:
        self.path = path
        self.details = details
        super().__init__(message)


class TransportError(MigrateError):
    """The network or the service kept failing and the retries are used up.

    ``url`` must already be redacted; ``cause`` is a redacted description of the last failure.
    """

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str | None = None,
        *,
        method: str = "",
        url: str = "",
        attempts: int = 0,
        cause: str = "",
    ) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        self.cause = cause
        if message is None:
            tries = f"{attempts} attempt" + ("" if attempts == 1 else "s")
            message = (
                f"{method} {url} failed after {tries} (last error: {cause}). "
                "The service or the network is unavailable; what was done so far is kept, "
                "so run the same command again to resume."
            )
        super().__init__(message)


class ServiceUnavailable(TransportError):
    """A service stopped answering altogether and was given up on (see ``RetryPolicy``).

    Every thread that talks to the service gets this error from then on, at once.
    """


class AnswerLost(TransportError):
    """A write that must not be sent twice went out, and no answer came back.

    The service may have applied it. It is not sent again blindly (``replay=False``): the
    caller looks for what it created first.
    """


class IncompleteBody(TransportError):
    """A response body ended before its Content-Length: retry the whole download.

    The HTTP layer cannot retry this itself because part of the body was already written to
    the caller's file; the blob store discards the partial file and asks again.
    """

    def __init__(
        self, *, method: str, url: str, received: int, expected: int | None, cause: str = ""
    ) -> None:
        self.received = received
        self.expected = expected
        size = f"{received} of {expected}" if expected is not None else f"{received}"
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"{method} {url} ended after {size} bytes{detail}. Retry the download; "
            "the partial file must be discarded.",
            method=method,
            url=url,
            attempts=1,
            cause=cause or "body cut short",
        )


class ApiError(MigrateError):
    """A service answered with a status the caller does not handle.

    Build it with a full message, or with ``status``/``method``/``endpoint``/``body`` (already
    redacted) to get the standard wording.
    """

    exit_code = EXIT_FAILED
    BODY_EXCERPT = 200

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        method: str = "",
        endpoint: str = "",
        body: str = "",
    ) -> None:
        self.status = status
        self.method = method
        self.endpoint = endpoint
        excerpt = one_line(body)
        if len(excerpt) > self.BODY_EXCERPT:
            excerpt = excerpt[: self.BODY_EXCERPT] + "…"
        self.body_excerpt = excerpt
        if message is None:
            answer = f"{method} {endpoint} answered HTTP {status}"
            message = f"{answer}: {excerpt or '(empty body)'}. {_hint_for_status(status)}"
        super().__init__(message)


def _hint_for_status(status: int | None) -> str:
    if status in (401, 403):
        return "Check the credentials and the account's permissions, then run the command again."
    if status == 404:
        return "Check the project and ids in migration.toml, then run the command again."
    if status is not None and status >= 500:
        return "The service is failing; run the same command again later to resume."
    return "This is unexpected; keep the log, then run the same command again to resume."


class StageFailed(MigrateError):
    """A stage stopped partway; ``partial`` holds what it had done and nothing of it is lost."""

    exit_code = EXIT_FAILED

    def __init__(
        self, stage: str, reason: str, *, partial: Any = None, resume_command: str = ""
    ) -> None:
        self.stage = stage
        self.reason = one_line(reason)
        self.partial = partial
        self.resume_command = resume_command or f"migrate {stage}"
        super().__init__(
            f"{stage} stopped before finishing: {self.reason.rstrip('.')}. "
            f"What it had done is kept; resume with `{self.resume_command}`."
        )


def exit_code_for(error: BaseException) -> int:
    """The process exit code for an exception reaching the CLI."""
    return error.exit_code if isinstance(error, MigrateError) else EXIT_FAILED


class UploadBytesMismatch(Exception):
    """The file read for an upload is not the expected one; storage got no whole file.

    The message completes "the file …" (``has sha256 …, not the … expected``).
    """

    def __init__(self, message: str, *, expected: str, actual: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
