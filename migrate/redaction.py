"""Which names mark a value as a credential: the one list every redaction derives from.

``clients/http.py`` masks these parameters in messages, ``store/db.py`` strips them from every
URL that reaches the staging DB, ``store/runs.py`` masks command arguments with such names, and
``settings.py`` refuses them as keys of ``migration.toml``. Add a name here and all four follow.
"""

from __future__ import annotations

import re

#: Query, form and JSON parameters whose values are credentials wherever they appear: BIM 360
#: Field's ``ticket`` and login ``password``, Procore's tokens and client secret. Matched as
#: whole names (case-insensitive), so an ordinary parameter never loses its value.
CREDENTIAL_PARAMS = (
    "ticket",
    "access_token",
    "refresh_token",
    "token",
    "client_secret",
    "password",
)

#: Fragments that make any other key (a config key, a command argument) look like a credential.
#: Looser than CREDENTIAL_PARAMS on purpose: a key is only a name, so masking one too many costs
#: nothing, while a URL parameter dropped by mistake would lose data.
CREDENTIAL_WORDS = (
    "pass",
    "secret",
    "token",
    "ticket",
    "api_key",
    "apikey",
    "signature_key",
    "authorization",
    "authorisation",
    "cookie",
    "credential",
)

#: Whole key names that are credentials though they contain none of the words (signed URLs).
CREDENTIAL_NAMES = ("sig",)

_CREDENTIAL_KEY = re.compile(
    "|".join(
        [re.escape(word) for word in CREDENTIAL_WORDS]
        + [f"^{re.escape(name)}$" for name in CREDENTIAL_NAMES]
    ),
    re.IGNORECASE,
)


def is_credential_key(key: str) -> bool:
    """True when a key named ``key`` must never show its value (``client_secret``, ``sig``)."""
    return _CREDENTIAL_KEY.search(key) is not None
