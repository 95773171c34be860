"""migration.toml loading and validation, and credentials from the environment."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from migrate.errors import ConfigError
from migrate.settings import (
    Secret,
    Settings,
    check_url,
    default_config_text,
    is_loopback_host,
    load_settings,
    source_credentials,
    target_credentials,
)

SOURCE_KEYS = (
    "base_url, project_id, project_name, workers, page_size, timeout, give_up_after, "
    "project_export, export_wait, export_poll"
)

# (file content, exact message with {path} for the config file)
BAD_CONFIGS = [
    (
        "[source]\nworker = 8\n",
        '[source] worker in {path} is not a known key. Did you mean "workers"? '
        f"Known keys in [source]: {SOURCE_KEYS}.",
    ),
    (
        "[source]\ncolour = 8\n",
        f"[source] colour in {{path}} is not a known key. Known keys in [source]: {SOURCE_KEYS}.",
    ),
    (
        "[tagret]\ncompany_id = 1\n",
        '[tagret] in {path} is not a known section. Did you mean "target"? '
        "Known sections: source, target, staging, mappings, transform.",
    ),
    (
        '[source]\npassword = "hunter2"\n',
        "[source] password in {path} looks like a credential; credentials are read only from "
        "the environment. Remove it from the file and set BIM360_FIELD_PASSWORD in the "
        "environment instead.",
    ),
    (
        '[target]\nclient_secret = "s3cr3t"\n',
        "[target] client_secret in {path} looks like a credential; credentials are read only "
        "from the environment. Remove it from the file and set PROCORE_CLIENT_SECRET in the "
        "environment instead.",
    ),
    (
        '[target]\naccess_token = "eyJ"\n',
        "[target] access_token in {path} looks like a credential; credentials are read only "
        "from the environment. Remove it from the file and set PROCORE_ACCESS_TOKEN in the "
        "environment instead.",
    ),
    (
        '[source]\nticket = "abc"\n',
        "[source] ticket in {path} looks like a credential; credentials are read only from "
        "the environment. Remove it from the file and set BIM360_FIELD_PASSWORD in the "
        "environment instead.",
    ),
    (
        'api_token = "abc"\n',
        "api_token in {path} looks like a credential; credentials are read only from the "
        "environment. Remove it from the file and set the matching variable "
        "(BIM360_FIELD_PASSWORD, PROCORE_CLIENT_SECRET or PROCORE_ACCESS_TOKEN) in the "
        "environment instead.",
    ),
    (
        '[source]\nworkers = "4"\n',
        '[source] workers in {path} must be a whole number of 1 or more, got "4". '
        "Write e.g. workers = 4.",
    ),
    (
        "[target]\nworkers = 0\n",
        "[target] workers in {path} must be a whole number of 1 or more, got 0. "
        "Write e.g. workers = 4.",
    ),
    (
        "[source]\npage_size = true\n",
        "[source] page_size in {path} must be a whole number of 1 or more, got true. "
        "Write e.g. page_size = 100.",
    ),
    (
        "[source]\ntimeout = -5\n",
        "[source] timeout in {path} must be a number of seconds above 0, got -5. "
        "Write e.g. timeout = 60.",
    ),
    (
        "[source]\nproject_id = 1234\n",
        "[source] project_id in {path} must be a string, got 1234. "
        'Write it in quotes, e.g. project_id = "1234".',
    ),
    (
        '[source]\nproject_name = "  "\n',
        "[source] project_name in {path} is empty. Give it a value, or remove the line to use "
        "the default.",
    ),
    (
        '[source]\nproject_id = "a1"\nproject_name = "North"\n',
        "[source] in {path} sets both project_id and project_name. Keep one of them.",
    ),
    (
        '[target]\ncompany_id = "4100"\n',
        '[target] company_id in {path} must be a whole number of 1 or more, got "4100". '
        "Write e.g. company_id = 123.",
    ),
    (
        '[source]\nbase_url = "http://bim360field.autodesk.com"\n',
        "[source] base_url in {path}: plain http is only allowed to loopback "
        "(got http://bim360field.autodesk.com). Use https://bim360field.autodesk.com.",
    ),
    (
        '[target]\nauth_url = "http://10.0.0.5:8080"\n',
        "[target] auth_url in {path}: plain http is only allowed to loopback "
        "(got http://10.0.0.5:8080). Use https://10.0.0.5:8080.",
    ),
    (
        '[target]\nbase_url = "api.procore.com"\n',
        "[target] base_url in {path} is not a URL: expected http(s)://host, got "
        '"api.procore.com". Write the full URL, e.g. https://api.procore.com.',
    ),
    (
        '[target]\nbase_url = "https://me:pw@api.procore.com"\n',
        "[target] base_url in {path} contains a user name or password. Remove them; "
        "credentials are read from environment variables.",
    ),
    (
        '[transform]\nunresolved_assignee = "drop"\n',
        '[transform] unresolved_assignee in {path} must be "unassign" or "quarantine", got '
        '"drop". Write unresolved_assignee = "unassign" to leave such issues unassigned, or '
        '"quarantine" to hold them back.',
    ),
    (
        '[transform]\nchecklist_items_as_issues = "yes"\n',
        '[transform] checklist_items_as_issues in {path} must be true or false, got "yes". '
        "Write checklist_items_as_issues = true or checklist_items_as_issues = false.",
    ),
    (
        '[transform]\ntitle_template = "{identifier}"\n',
        "[transform] title_template in {path}: the title template lives only in the "
        "title_template row of {fields}. Move it there and delete this line.",
    ),
    (
        "[staging]\npath = 5\n",
        '[staging] path in {path} must be a string, got 5. Write it in quotes, e.g. path = "5".',
    ),
    (
        '[transform]\ntime_zone = "Mars/Olympus_Mons"\n',
        '[transform] time_zone in {path} is not a time zone, got "Mars/Olympus_Mons". '
        'Write time_zone = "UTC" or an IANA name such as "America/New_York".',
    ),
    (
        "source = 3\n",
        "source in {path} must be a table, written [source] on its own line, got 3.",
    ),
    (
        "[source]\nworkers = 4\nworkers 8\n",
        "Config file {path} is not valid TOML: Expected '=' after a key in a key/value pair "
        "(at line 3, column 9). Fix that line; `migrate init` shows a valid example.",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_gives_one_exact_line(tmp_path, text, message):
    path = tmp_path / "migration.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    fields_csv = path.parent / "mappings" / "fields.csv"
    assert str(caught.value) == message.replace("{path}", str(path)).replace(
        "{fields}", str(fields_csv)
    )
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    for secret in ("hunter2", "s3cr3t", "eyJ", '"abc"'):
        assert secret not in str(caught.value)


def test_missing_unreadable_and_non_utf8_files(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(missing, env={})
    assert str(caught.value) == (
        f"Config file {missing} not found. Run `migrate init` to create one, or point to it "
        "with --config or MIGRATE_CONFIG."
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})  # a folder, not a file
    assert str(caught.value).startswith(f"Cannot read config file {tmp_path}: ")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[source]\n\xff\xfe")
    with pytest.raises(ConfigError) as caught:
        load_settings(binary, env={})
    assert str(caught.value) == (
        f"Config file {binary} is not UTF-8 text (bad byte at offset 9). Save it as UTF-8."
    )


def test_path_argument_then_env_then_working_directory(tmp_path, monkeypatch):
    from_arg = tmp_path / "arg.toml"
    from_arg.write_text("[source]\nworkers = 2\n")
    from_env = tmp_path / "env.toml"
    from_env.write_text("[source]\nworkers = 3\n")
    (tmp_path / "migration.toml").write_text("[source]\nworkers = 5\n")
    env = {"MIGRATE_CONFIG": str(from_env)}
    assert load_settings(from_arg, env=env).source.workers == 2
    assert load_settings(None, env=env).source.workers == 3
    monkeypatch.chdir(tmp_path)  # the working directory, not a library
    settings = load_settings(None, env={})
    assert settings.source.workers == 5
    assert settings.config_path == tmp_path / "migration.toml"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    config = folder / "migration.toml"
    config.write_text(
        '[staging]\npath = "work/staging.db"\nblobs = "/srv/blobs"\n'
        '[mappings]\ndir = "../shared-mappings"\n'
    )
    settings = load_settings(config, env={})
    assert settings.staging.path == folder / "work" / "staging.db"
    assert settings.staging.blobs == Path("/srv/blobs")
    assert settings.staging.logs == folder / "logs"
    assert settings.mappings.dir == folder / ".." / "shared-mappings"


def test_full_config_is_read_with_types(tmp_path):
    config = tmp_path / "migration.toml"
    config.write_text(
        '[source]\nbase_url = "http://127.0.0.1:8001/"\nproject_name = "North Campus"\n'
        "workers = 8\npage_size = 50\ntimeout = 12.5\n"
        '[target]\nbase_url = "http://localhost:8002"\nauth_url = "http://[::1]:8003"\n'
        "company_id = 4100\nproject_id = 5100\n"
        '[transform]\nchecklist_items_as_issues = true\nunresolved_assignee = "quarantine"\n'
    )
    settings = load_settings(config, env={})
    assert settings.source.base_url == "http://127.0.0.1:8001"
    assert (settings.source.workers, settings.source.page_size) == (8, 50)
    assert settings.source.timeout == 12.5
    assert settings.source_project() == ("project_name", "North Campus")
    assert settings.target_ids() == (4100, 5100)
    assert settings.target.auth_url == "http://[::1]:8003"
    assert settings.transform.checklist_items_as_issues is True
    assert settings.transform.unresolved_assignee == "quarantine"


def test_stage_requirements_name_the_missing_key(tmp_path):
    config = tmp_path / "migration.toml"
    config.write_text("[target]\ncompany_id = 4100\n")
    settings = load_settings(config, env={})
    with pytest.raises(ConfigError) as caught:
        settings.source_project()
    assert str(caught.value) == (
        f'[source] in {config} names no project. Add project_id = "…" or project_name = "…" '
        "(the BIM 360 Field project to extract)."
    )
    with pytest.raises(ConfigError) as caught:
        settings.target_ids()
    assert str(caught.value) == (
        f"[target] project_id is not set in {config}. Add project_id = <number> (the Procore "
        "company and project to load into)."
    )


def test_default_config_text_loads_as_the_defaults(tmp_path):
    config = tmp_path / "migration.toml"
    config.write_text(default_config_text(), encoding="utf-8")
    settings = load_settings(config, env={})
    defaults = Settings()
    assert settings.source == defaults.source
    assert settings.target == defaults.target
    assert settings.transform == defaults.transform
    assert settings.staging.path == tmp_path / "staging.db"
    assert settings.mappings.dir == tmp_path / "mappings"
    # Every documented key is in the template, and no credential is.
    text = default_config_text()
    for key in (
        "project_id",
        "project_name",
        "company_id",
        "auth_url",
        "unresolved_assignee",
        "checklist_items_as_issues",
        "checklists_as_inspections",
        "page_size",
    ):
        assert key in text
    for name in ("BIM360_FIELD_PASSWORD", "PROCORE_CLIENT_SECRET", "PROCORE_ACCESS_TOKEN"):
        assert name in text
    # Uncommenting the examples gives a config the stages accept.
    filled = (
        text.replace('# project_id = "0000', 'project_id = "0000')
        .replace("# company_id", "company_id")
        .replace("# project_id = 456", "project_id = 456")
    )
    config.write_text(filled, encoding="utf-8")
    filled_settings = load_settings(config, env={})
    assert filled_settings.source_project()[0] == "project_id"
    assert filled_settings.target_ids() == (123, 456)


# -- credentials ----------------------------------------------------------------------------------


def test_source_credentials_from_env_and_never_printed():
    creds = source_credentials(
        {"BIM360_FIELD_USERNAME": "demo@example.com", "BIM360_FIELD_PASSWORD": "hunter2"}
    )
    assert creds.username.reveal() == "demo@example.com"
    assert creds.password.reveal() == "hunter2"
    shown = f"{creds!r} {creds} {creds.password} {creds.password!r} {creds.password:>10}"
    assert "hunter2" not in shown and "***" in shown
    assert creds.redaction_values() == ("hunter2",)
    with pytest.raises(TypeError):
        pickle.dumps(creds.password)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "BIM360_FIELD_USERNAME"),
        ({"BIM360_FIELD_USERNAME": "a@b.c"}, "BIM360_FIELD_PASSWORD"),
        ({"BIM360_FIELD_USERNAME": "a@b.c", "BIM360_FIELD_PASSWORD": ""}, "BIM360_FIELD_PASSWORD"),
    ],
)
def test_missing_source_credential_names_the_variable(env, missing):
    with pytest.raises(ConfigError) as caught:
        source_credentials(env)
    assert str(caught.value) == (
        f"{missing} is not set. Set BIM360_FIELD_USERNAME and BIM360_FIELD_PASSWORD in the "
        "environment to the BIM 360 Field login (credentials are never read from "
        "migration.toml)."
    )


def test_target_credentials_client_pair_or_token():
    pair = target_credentials(
        {"PROCORE_CLIENT_ID": "demo-client", "PROCORE_CLIENT_SECRET": "demo-secret"}
    )
    assert pair.client_id.reveal() == "demo-client"
    assert pair.client_secret.reveal() == "demo-secret"
    assert pair.access_token is None
    assert "demo-secret" not in repr(pair)
    token = target_credentials({"PROCORE_ACCESS_TOKEN": "eyJtoken"})
    assert token.access_token.reveal() == "eyJtoken"
    assert token.redaction_values() == ("eyJtoken",)
    with pytest.raises(ConfigError) as caught:
        target_credentials({"PROCORE_CLIENT_ID": "demo-client"})
    assert str(caught.value) == (
        "PROCORE_CLIENT_SECRET is not set. Set PROCORE_CLIENT_ID and PROCORE_CLIENT_SECRET in "
        "the environment to the Procore app's client credentials, or set PROCORE_ACCESS_TOKEN."
    )


def test_secret_hides_its_value():
    secret = Secret("tok")
    assert (repr(secret), str(secret), f"{secret}") == ("***", "***", "***")
    assert secret.reveal() == "tok"
    assert secret == Secret("tok") and secret != "tok"


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("localhost.example.com", False),
        ("api.procore.com", False),
        ("::2", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert is_loopback_host(host) is loopback


def test_check_url_accepts_https_anywhere_and_http_on_loopback():
    for url in (
        "https://api.procore.com",
        "http://127.0.0.1:9/x",
        "http://localhost",
        "http://[::1]:8080/api",
    ):
        assert check_url(url, "test") == url
    with pytest.raises(ConfigError, match="plain http is only allowed to loopback"):
        check_url("http://127.0.0.1.nip.io", "test")


def test_time_zone_is_utc_by_default_and_takes_iana_names(tmp_path):
    path = tmp_path / "migration.toml"
    path.write_text("[source]\nworkers = 2\n", encoding="utf-8")
    assert load_settings(path, env={}).transform.zone().utcoffset(None).total_seconds() == 0
    path.write_text('[transform]\ntime_zone = "America/New_York"\n', encoding="utf-8")
    assert str(load_settings(path, env={}).transform.zone()) == "America/New_York"
