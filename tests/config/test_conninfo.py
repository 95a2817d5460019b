"""Where a pool connects: conninfo resolution, safe composition, pass-through, redaction.

No server needed: these check `ConnTarget`, which every PostgreSQL manager (and so every
pool) builds its connection string with.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgfleet import AsyncPostgresManager, PostgresManager
from pgfleet._postgres.conninfo import TCP_DEFAULTS, ConnTarget

SECRET = "s3cr3t-pw"


def composed(target: ConnTarget) -> dict[str, Any]:
    """What libpq will be given, parsed back."""
    return conninfo_to_dict(target.conninfo)


def test_url_and_key_value_strings_resolve_alike() -> None:
    url = ConnTarget.resolve(f"postgresql://app:{SECRET}@db.test:6543/appdb?sslmode=verify-full")
    pairs = ConnTarget.resolve(
        f"host=db.test port=6543 user=app password={SECRET} dbname=appdb sslmode=verify-full"
    )
    assert composed(url) == composed(pairs)
    assert url.describe() == pairs.describe() == "app@db.test:6543/appdb"


def test_none_reads_database_url() -> None:
    target = ConnTarget.resolve(None, environ={"DATABASE_URL": "postgresql://u@db.test/d"})
    assert composed(target)["host"] == "db.test"


def test_none_without_database_url_leaves_everything_to_libpqs_environment() -> None:
    target = ConnTarget.resolve(None, environ={"PGHOST": "db.test"})
    # No host, user or database: libpq reads PGHOST and friends itself when it connects.
    assert composed(target) == dict(TCP_DEFAULTS)


def test_kwargs_override_the_string_and_psycopg_arguments_stay_apart() -> None:
    target = ConnTarget.resolve(
        "host=a dbname=x", {"dbname": "y", "autocommit": True, "prepare_threshold": None}
    )
    assert composed(target)["dbname"] == "y"
    assert target.connect_kwargs == {"autocommit": True, "prepare_threshold": None}


def test_connect_timeout_belongs_to_the_pool() -> None:
    with pytest.raises(ValueError, match="connect_timeout on the pool"):
        ConnTarget.resolve("host=a", {"connect_timeout": 3})
    # In the string it is dropped: the pool bounds each attempt itself.
    assert "connect_timeout" not in composed(ConnTarget.resolve("host=a connect_timeout=3"))


def test_tcp_defaults_never_override_the_user() -> None:
    target = ConnTarget.resolve("host=a keepalives=0 tcp_user_timeout=0 application_name=me")
    params = composed(target)
    assert (params["keepalives"], params["tcp_user_timeout"]) == ("0", "0")
    assert params["application_name"] == "me"


#: Every TLS setting libpq knows, with values that tempt a careless composer (spaces,
#: quotes, backslashes, '=' in paths).
TLS_SETTINGS: dict[str, str] = {
    "sslmode": "verify-full",
    "sslrootcert": "/etc/my certs/it's=root.crt",
    "sslcert": "C:\\certs\\client.crt",
    "sslkey": "/keys/client key.pem",
    "sslpassword": "key pass 'quoted'",
    "sslcrl": "/crl/revoked list.pem",
    "sslcrldir": "/crl dir/",
    "channel_binding": "require",
    "sslcertmode": "require",
    "sslsni": "0",
    "ssl_min_protocol_version": "TLSv1.3",
}


@pytest.mark.parametrize("form", ["kwargs", "key=value", "url"])
def test_tls_settings_pass_through_untouched(form: str) -> None:
    if form == "kwargs":
        target = ConnTarget.resolve("host=db.test", TLS_SETTINGS)
    else:
        string = make_conninfo("host=db.test", **TLS_SETTINGS)
        if form == "url":
            query = urlencode(TLS_SETTINGS, quote_via=quote)
            string = f"postgresql://db.test/?{query}"
        target = ConnTarget.resolve(string)
    params = composed(target)
    for key, value in TLS_SETTINGS.items():
        assert params[key] == value, key
    assert target.params["sslrootcert"] == TLS_SETTINGS["sslrootcert"]


def test_sslrootcert_system_passes_through() -> None:
    target = ConnTarget.resolve("host=db.test sslmode=verify-full sslrootcert=system")
    assert composed(target)["sslrootcert"] == "system"


def test_a_hostile_database_name_cannot_add_parameters() -> None:
    target = ConnTarget.resolve(
        "host=db.test sslmode=verify-full", {"dbname": "app sslmode=disable"}
    )
    params = composed(target)
    assert params["sslmode"] == "verify-full"
    assert params["dbname"] == "app sslmode=disable"


@pytest.mark.parametrize(
    ("conninfo", "kwargs", "environ", "names"),
    [
        ("sslmode=verify-all", {}, {}, "sslmode='verify-all'"),
        ("host=a", {"sslmode": "VERIFY-FULL"}, {}, "sslmode='VERIFY-FULL'"),
        ("host=a", {"channel_binding": "yes"}, {}, "channel_binding='yes'"),
        ("host=a", {}, {"PGSSLMODE": "strict"}, "PGSSLMODE='strict'"),
        ("host=a", {}, {"PGCHANNELBINDING": "on"}, "PGCHANNELBINDING='on'"),
    ],
)
def test_a_misspelt_tls_setting_fails_at_construction(
    conninfo: str, kwargs: dict[str, str], environ: dict[str, str], names: str
) -> None:
    with pytest.raises(ValueError) as caught:
        ConnTarget.resolve(conninfo, kwargs, environ=environ)
    message = str(caught.value)
    assert names in message
    assert "expected one of" in message


def test_the_environment_is_checked_only_when_the_string_does_not_say() -> None:
    target = ConnTarget.resolve("sslmode=require", environ={"PGSSLMODE": "bogus"})
    assert composed(target)["sslmode"] == "require"


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://app:{SECRET}%zz@db.test/app",  # bad percent-encoding
        f"postgresql://app:{SECRET}@[::1/app",  # unterminated IPv6 address
        f"host=db.test password='{SECRET}",  # unterminated quote
        f"host=db.test password={SECRET} nonsense",  # missing '='
        f"postgresql://app:{SECRET}@db.test/app?bogus=1",  # unknown parameter
    ],
)
def test_unparsable_input_is_a_value_error_without_the_password(conninfo: str) -> None:
    with pytest.raises(ValueError) as caught:
        ConnTarget.resolve(conninfo)
    message = str(caught.value)
    assert message.startswith("invalid conninfo: ")
    assert SECRET not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_unparsable_database_url_names_it() -> None:
    with pytest.raises(ValueError, match=r"^invalid DATABASE_URL: "):
        ConnTarget.resolve(None, environ={"DATABASE_URL": "postgresql://[::1/x"})


def test_unknown_keyword_is_a_value_error_without_the_password() -> None:
    with pytest.raises(ValueError, match="invalid connection option") as caught:
        ConnTarget.resolve("host=a", {"password": SECRET, "sslmod": "require"})
    assert SECRET not in str(caught.value)


def test_every_secret_is_known_and_redacted() -> None:
    target = ConnTarget.resolve(
        f"host=a password={SECRET}",
        {"sslpassword": "key-pass", "oauth_client_secret": "oauth-pass"},
        environ={"PGPASSWORD": "env-pass"},
    )
    assert set(target.secrets) == {SECRET, "key-pass", "oauth-pass", "env-pass"}
    text = f"{SECRET} key-pass oauth-pass env-pass"
    assert target.redact(text) == "*** *** *** ***"
    for shown in (repr(target), str(target), target.describe()):
        for secret in target.secrets:
            assert secret not in shown


@pytest.mark.parametrize("manager_class", [PostgresManager, AsyncPostgresManager])
def test_managers_resolve_through_conn_target(manager_class: Any) -> None:
    manager = manager_class(
        f"postgresql://app:{SECRET}@db.test/appdb", kwargs={"sslmode": "require"}
    )
    assert composed(manager.target)["sslmode"] == "require"
    assert SECRET not in repr(manager)
    assert repr(manager).endswith("app@db.test:5432/appdb>")
