"""Both simulators started together: what `migrate sandbox serve`, the demo and the tests use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrate.sandbox.faults import FaultConfig, Faults
from migrate.sandbox.field_server import FieldApp
from migrate.sandbox.generator import GeneratedProject
from migrate.sandbox.httpbase import RunningServer
from migrate.sandbox.procore_server import ProcoreApp

FIELD_USERNAME = "demo@example.com"
FIELD_PASSWORD = "demo"
PROCORE_CLIENT_ID = "demo-client"
PROCORE_CLIENT_SECRET = "demo-secret"


@dataclass
class SandboxOptions:
    """Everything that shapes a sandbox; defaults are the embedded demo."""

    seed: int = 7
    issues: int = 300
    host: str = "127.0.0.1"
    field_port: int = 0
    procore_port: int = 0
    field_username: str = FIELD_USERNAME
    field_password: str = FIELD_PASSWORD
    procore_client_id: str = PROCORE_CLIENT_ID
    procore_client_secret: str = PROCORE_CLIENT_SECRET
    field_faults: FaultConfig = field(default_factory=FaultConfig)
    procore_faults: FaultConfig = field(default_factory=FaultConfig)
    #: Extra keyword arguments for FieldApp (ticket_max_calls, ticket_max_seconds).
    field_options: dict[str, Any] = field(default_factory=dict)
    #: Extra keyword arguments for ProcoreApp (token_ttl, hourly_limit, spike_limit, ...).
    procore_options: dict[str, Any] = field(default_factory=dict)


class Sandbox:
    """A generated BIM 360 Field project and a Procore company, served on loopback.

    Use as a context manager; ``field_app`` and ``procore_app`` expose the simulators' state
    so tests and benchmarks can check exactly what reached "Procore".
    """

    def __init__(self, options: SandboxOptions | None = None, project: Any | None = None) -> None:
        self.options = options or SandboxOptions()
        opts = self.options
        if opts.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox only listens on loopback")
        self.project = project or GeneratedProject(seed=opts.seed, issues=opts.issues)
        self.field_app = FieldApp(
            self.project,
            username=opts.field_username,
            password=opts.field_password,
            faults=Faults(opts.field_faults),
            **opts.field_options,
        )
        self.procore_app = ProcoreApp(
            self.project.target_state(),
            client_id=opts.procore_client_id,
            client_secret=opts.procore_client_secret,
            faults=Faults(opts.procore_faults),
            **opts.procore_options,
        )
        self._field: RunningServer | None = None
        self._procore: RunningServer | None = None

    def start(self) -> Sandbox:
        self._field = RunningServer(self.field_app, self.options.host, self.options.field_port)
        self._procore = RunningServer(
            self.procore_app, self.options.host, self.options.procore_port
        )
        return self

    def stop(self) -> None:
        for server in (self._field, self._procore):
            if server is not None:
                server.stop()
        self._field = self._procore = None

    def stop_procore(self) -> None:
        """Take the Procore simulator off the network (connections cut); its state is kept."""
        assert self._procore is not None, "Procore is not running"
        self._procore.stop()

    def restart_procore(self) -> None:
        """Serve the same Procore state again on the same port, after :meth:`stop_procore`."""
        assert self._procore is not None, "the sandbox was never started"
        port = self._procore.port
        self._procore = RunningServer(self.procore_app, self.options.host, port)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def field_url(self) -> str:
        assert self._field is not None, "sandbox not started"
        return self._field.url

    @property
    def procore_url(self) -> str:
        assert self._procore is not None, "sandbox not started"
        return self._procore.url

    @property
    def field_project_id(self) -> str:
        return self.project.project["id"]

    @property
    def procore_company_id(self) -> int:
        return self.procore_app.company["id"]

    @property
    def procore_project_id(self) -> int:
        return self.project.target_state()["projects"][0]["id"]

    def config_text(self) -> str:
        """A migration.toml pointing at this sandbox (its URLs, project and company)."""
        return (
            "[source]\n"
            f'base_url = "{self.field_url}"\n'
            f'project_id = "{self.field_project_id}"\n'
            "[target]\n"
            f'base_url = "{self.procore_url}"\n'
            f'auth_url = "{self.procore_url}"\n'
            f"company_id = {self.procore_company_id}\n"
            f"project_id = {self.procore_project_id}\n"
            "[staging]\n"
            'path = "staging.db"\n'
            'blobs = "blobs"\n'
            'logs = "logs"\n'
            "[mappings]\n"
            'dir = "mappings"\n'
        )

    def environment(self) -> dict[str, str]:
        """Environment variables a pipeline run needs to talk to this sandbox."""
        opts = self.options
        return {
            "BIM360_FIELD_USERNAME": opts.field_username,
            "BIM360_FIELD_PASSWORD": opts.field_password,
            "PROCORE_CLIENT_ID": opts.procore_client_id,
            "PROCORE_CLIENT_SECRET": opts.procore_client_secret,
        }
