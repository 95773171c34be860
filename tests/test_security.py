"""Security: no secret anywhere after a faulted full run, blob paths inside the blob store, a
private staging DB, TLS certificates verified, plain http refused except to loopback.

The full run goes through `run_pipeline` (and the report) against a sandbox with distinctive
credentials and every fault kind switched on: 5xx, 429 with Retry-After, bodies cut short,
BIM 360 Field tickets expiring every 30 calls and Procore tokens expiring server-side while
the client still trusts them, twice (so the 401 → new token path runs). Then every byte the tool
left behind and everything it printed is searched for the password, the client secret, every
ticket the Field simulator issued and every token the Procore simulator issued.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from migrate.clients.http import HttpClient
from migrate.clients.procore import ProcoreClient
from migrate.demo import write_demo_config
from migrate.errors import TransportError
from migrate.mappings import write_default_mappings
from migrate.pipeline import run_pipeline
from migrate.report import report_from_settings
from migrate.sandbox.faults import FaultConfig
from migrate.sandbox.runner import Sandbox, SandboxOptions
from migrate.settings import Secret, TargetCredentials, TargetSettings, load_settings
from migrate.store.blobs import MARKER_NAME

# Characters that URL and form encoding change, so that an encoded copy is looked for too.
FIELD_PASSWORD = "Fld-Pa55 w/+=&%-7c1e"
PROCORE_CLIENT_SECRET = "Pc-S3cret/+= &-90d4"
#: Short enough that tokens also run out on their own during the load.
TOKEN_TTL = 3.0
BLOB_PATH = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")


def faults(seed: int) -> FaultConfig:
    return FaultConfig(
        error_rate=0.06, rate_limit_rate=0.04, retry_after=(0, 1), drop_rate=0.04, seed=seed
    )


def encoded_forms(secret: str) -> set[bytes]:
    """The secret as it could appear in a file: raw, URL-quoted, form-quoted, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    return {form.encode("utf-8") for form in forms}


class TokensExpireMidLoad:
    """Expires every Procore token server-side, twice during the load, while the client still
    trusts it: the next call answers 401 and the client must fetch a new token.

    The simulator has no public way to do this (FieldApp has ``expire_tickets``), so its
    private token table is edited under its lock. Moving its clock instead would also move
    the X-Rate-Limit-Reset it reports, and the client would pace to a reset minutes away.
    """

    def __init__(self, box: Sandbox) -> None:
        self.app = box.procore_app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for route, count in (("locations.find_or_create_by_path", 5), ("uploads.create", 5)):
            while self.app.calls.get(route, 0) < count:
                if self.stop.wait(0.02):
                    return
            with self.app.lock:
                now = self.app.now()
                for token in self.app._tokens:
                    self.app._tokens[token] = min(self.app._tokens[token], now)

    def __enter__(self) -> TokensExpireMidLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_faulted_full_run_leaves_no_secret_and_keeps_files_private(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    options = SandboxOptions(
        issues=40,
        seed=7,
        field_password=FIELD_PASSWORD,
        procore_client_secret=PROCORE_CLIENT_SECRET,
        field_faults=faults(1),
        procore_faults=faults(2),
        field_options={"ticket_max_calls": 30},
        # A roomy, short spike window keeps the run quick: after a 429 the client waits for
        # the window's reset. Quota pacing is test_load's.
        procore_options={"token_ttl": TOKEN_TTL, "spike_limit": 2000, "spike_window": 2.0},
    )
    write_default_mappings(tmp_path / "mappings")
    with Sandbox(options) as box:
        settings = load_settings(write_demo_config(tmp_path, box))
        env = box.environment()
        with TokensExpireMidLoad(box):
            outcome = run_pipeline(settings, env, verbose_stream=sys.stderr)
        report = report_from_settings(settings, env, out_dir=tmp_path / "report")
        tickets = list(box.field_app.issued_tickets)
        # The simulator has no public list of issued tokens: its private token table holds
        # every token it ever granted (expired ones are never removed).
        tokens = list(box.procore_app._tokens)
        refused_tokens = sum(
            n
            for (route, status), n in box.procore_app.statuses.items()
            if status == 401 and route != "oauth.token"
        )
        fired = {
            "field": dict(box.field_app.faults.fired),
            "procore": dict(box.procore_app.faults.fired),
        }
    out, err = capfd.readouterr()

    # The run really went through the weather it was meant to.
    assert outcome.results["load"].counts["coordination_issue"]["created"] > 0, (
        outcome.summary_lines()
    )
    assert len(tickets) >= 3 and len(tokens) >= 3 and refused_tokens >= 1, (
        len(tickets),
        len(tokens),
        refused_tokens,
    )
    for side in ("field", "procore"):
        assert fired[side]["error"] and fired[side]["drop"], fired
    assert fired["field"]["rate_limit"] + fired["procore"]["rate_limit"] > 0, fired
    assert "retry" in err  # the HTTP layer's retries reached the mirrored run log

    # Every secret, in every encoding, is absent from every file and from the output.
    secrets = {
        "the Field password": FIELD_PASSWORD,
        "the Procore client secret": PROCORE_CLIENT_SECRET,
        **{f"Field ticket {n}": t for n, t in enumerate(tickets)},
        **{f"Procore token {n}": t for n, t in enumerate(tokens)},
    }
    staging = Path(settings.staging.path)
    places: dict[str, bytes] = {}
    for path in sorted(staging.parent.glob(staging.name + "*")):  # the DB, -wal, -shm
        places[str(path)] = path.read_bytes()
    blobs = Path(settings.staging.blobs)
    places["blob file names"] = "\n".join(
        p.relative_to(blobs).as_posix() for p in blobs.rglob("*")
    ).encode()
    for folder in (Path(settings.staging.logs), tmp_path / "report"):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, f"nothing written in {folder}"
        for path in files:
            places[str(path)] = path.read_bytes()
    places["stdout"] = out.encode("utf-8", "replace")
    places["stderr"] = err.encode("utf-8", "replace")
    places["the report's summary"] = "\n".join(report.summary_lines()).encode()
    assert any(name.endswith("staging.db") for name in places)
    found = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for form in encoded_forms(secret)
        for where, content in places.items()
        if form in content
    ]
    assert found == [], found

    # URLs from the API are stored without their ticket.
    db = sqlite3.connect(staging)
    urls = [
        url
        for (url,) in db.execute("SELECT source_url FROM attachments WHERE kind != 'UriReference'")
    ]
    stored = {
        row[0]: row[1]
        for row in db.execute(
            "SELECT id, sha256 FROM attachments WHERE state = 'stored' UNION ALL "
            "SELECT 'export:' || kind, sha256 FROM project_exports WHERE state = 'stored'"
        )
    }
    db.close()
    assert urls and all("object_id=" in url and "ticket" not in url.lower() for url in urls)

    # Blob paths stay inside the blob store, in its aa/bb/<sha256> layout only (and its marker).
    assert stored
    layout = set()
    for path in blobs.rglob("*"):
        relative = path.relative_to(blobs).as_posix()
        assert not path.is_symlink() and path.resolve().is_relative_to(blobs.resolve())
        if relative == MARKER_NAME:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            continue
        if path.is_file():
            match = BLOB_PATH.match(relative)
            assert match and match[3].startswith(match[1] + match[2]), relative
            layout.add(match[3])
    assert layout == set(stored.values())

    # The staging DB (and its side files, while they exist) can be read by its owner only.
    for path in staging.parent.glob(staging.name + "*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- TLS: certificates are checked -----------------------------------------------------------
def non_loopback_address() -> str | None:
    """This machine's own address on a real interface (no packet is sent), if it has one."""
    for destination in ("10.254.254.254", "192.0.2.1", "8.8.8.8"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((destination, 9))  # a UDP connect only picks the route
            address = probe.getsockname()[0]
        except OSError:
            continue
        finally:
            probe.close()
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b'{"hello": "tls"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server with a self-signed certificate on this machine's non-loopback address:
    (its URL, the certificate file)."""
    address = non_loopback_address()
    if address is None or shutil.which("openssl") is None:
        pytest.skip("needs openssl and a non-loopback interface")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=migrate-test",
            "-addext",
            f"subjectAltName=IP:{address}",
        ],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://{address}:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_https_to_a_non_loopback_host_verifies_the_certificate(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("NO_PROXY", "*")
    client = HttpClient(url)
    try:
        assert client.session.verify is True
        with pytest.raises(TransportError, match="TLS certificate verification failed"):
            client.request("GET", "/hello")
        assert client.stats.total_requests == 1  # refused at once, not retried
        # The same server once its certificate is trusted: the refusal was the certificate's.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert client.request("GET", "/hello").json() == {"hello": "tls"}
    finally:
        client.close()


def test_every_procore_and_field_client_keeps_verification_on() -> None:
    """No client turns verification off for a real host: the setting, where no handshake can
    be made without the network."""
    target = TargetSettings(
        base_url="https://api.procore.com",
        auth_url="https://login.procore.com",
        company_id=1,
        project_id=2,
    )
    credentials = TargetCredentials(client_id=Secret("id"), client_secret=Secret("secret"))
    field = HttpClient("https://bim360field.autodesk.com")
    with ProcoreClient(target, credentials) as procore, field:
        for client in (procore.api, procore.auth, procore.storage, field):
            assert client.session.verify is True, client.base_url
            adapter = client.session.get_adapter(client.base_url)
            assert adapter.poolmanager.connection_pool_kw.get("cert_reqs") in (
                None,
                "CERT_REQUIRED",
                ssl.CERT_REQUIRED,
            ), client.base_url


# -- plain http only to loopback ---------------------------------------------------------------
CONFIG = """\
[source]
base_url = "{source}"
project_id = "00000330-0000-0000-0000-000000000001"
[target]
base_url = "{target}"
auth_url = "{auth}"
company_id = 4100
project_id = 5100
[staging]
path = "staging.db"
"""


@pytest.mark.parametrize(
    ("section", "key", "url"),
    [
        ("source", "base_url", "http://example.com"),
        ("source", "base_url", "http://10.1.2.3:8080/api"),
        ("target", "base_url", "http://10.1.2.3"),
        ("target", "base_url", "http://example.com"),
        ("target", "auth_url", "http://login.example.com"),
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused_by_the_cli(
    tmp_path: Path, section: str, key: str, url: str
) -> None:
    urls = {
        "source": "https://bim360field.autodesk.com",
        "target": "https://api.procore.com",
        "auth": "https://login.procore.com",
    }
    urls["auth" if key == "auth_url" else section] = url
    config = tmp_path / "migration.toml"
    config.write_text(CONFIG.format(**urls), encoding="utf-8")
    env = {
        **os.environ,
        "BIM360_FIELD_USERNAME": "u@example.com",
        "BIM360_FIELD_PASSWORD": FIELD_PASSWORD,
        "PROCORE_CLIENT_ID": "id",
        "PROCORE_CLIENT_SECRET": PROCORE_CLIENT_SECRET,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from migrate.cli import main; main()",
            "extract",
            "--config",
            str(config),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: [{section}] {key} in ")
    assert "plain http is only allowed to loopback" in lines[0]
    assert "Traceback" not in done.stderr and FIELD_PASSWORD not in done.stderr
    assert not (tmp_path / "staging.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:2",
        "https://example.com",
        "https://10.1.2.3",
    ],
)
def test_https_anywhere_and_http_to_loopback_are_accepted(url: str) -> None:
    client = HttpClient(url)
    client.close()
