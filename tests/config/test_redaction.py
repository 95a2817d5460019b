"""pgfleet's one redaction function, the one-line description of an exception, and the port
check that spares libpq a connection attempt it would refuse."""

from __future__ import annotations

import psycopg
import pytest

from pgfleet import Pool
from pgfleet._postgres.conninfo import ConnTarget, check_params, redact, secrets_in
from pgfleet._text import describe, first_line, hints

SECRET = "s3cr:t/pw"


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app:{secret}@db.test/app",
        "postgresql://:{secret}@db.test",
        "unrecognized arguments: --dsn=postgresql://app:{secret}@db.test/app?sslmode=require",
        "host=db.test password={secret} dbname=app",
        "host=db.test password = {secret}",
        "host=db.test password='{secret} with spaces' dbname=app",
        "host=db.test password='{secret} unterminated",
        "host=db.test password='it\\'s {secret}'",
        "host=db.test sslpassword={secret}",
        "oauth_client_secret={secret} scram_client_key={secret}",
        "invalid choice: 'host=db.test password={secret}'",
        "postgresql://db.test/app?sslmode=require&password={secret}",
    ],
)
def test_a_password_in_a_conninfo_or_url_is_found_and_redacted(text: str) -> None:
    shown = text.format(secret=SECRET)
    redacted = redact(shown)
    assert SECRET not in redacted
    assert "***" in redacted
    assert "db.test" in redacted or "oauth" in redacted  # the rest stays readable


def test_a_percent_encoded_password_is_redacted_in_both_forms() -> None:
    url = "postgresql://app:p%40ss%20word@db.test/app"
    assert set(secrets_in(url)) == {"p%40ss%20word", "p@ss word"}
    assert redact(f"{url} (p@ss word)") == "postgresql://app:***@db.test/app (***)"


def test_only_the_password_of_a_url_query_is_redacted() -> None:
    text = "postgresql://db.test/app?password=pw&sslmode=require"
    assert redact(text) == "postgresql://db.test/app?password=***&sslmode=require"


@pytest.mark.parametrize(
    "text",
    [
        'password authentication failed for user "app"',
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        "serving on http://127.0.0.1:8000/",
        "postgresql://app@db.test/app",
        "mypassword=x is not a libpq keyword",
    ],
)
def test_text_without_a_password_is_unchanged(text: str) -> None:
    assert secrets_in(text) == ()
    assert redact(text) == text


def test_known_secrets_are_redacted_wherever_they_appear() -> None:
    assert redact('database "hunter2" does not exist', ["hunter2", ""]) == (
        'database "***" does not exist'
    )
    # A secret that contains another is replaced whole.
    assert redact("abcdef", ["abc", "abcdef"]) == "***"


@pytest.mark.parametrize(
    ("conninfo", "named"),
    [
        ("host=a port=notanumber", "port='notanumber'"),
        ("postgresql://a:notanumber/db", "port='notanumber'"),
        ("host=a port=0", "port='0'"),
        ("host=a port=65536", "port='65536'"),
        ("host=a,b port=5432,99999", "port='5432,99999'"),
        ("host=a port=1_000", "port='1_000'"),
    ],
)
def test_a_bad_port_fails_at_construction(conninfo: str, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        ConnTarget.resolve(conninfo, {"password": SECRET})
    message = str(caught.value)
    assert message.startswith(f"{named} is not valid: expected a port number from 1 to 65535")
    assert SECRET not in message
    with pytest.raises(ValueError, match="is not valid"):
        Pool(conninfo)


@pytest.mark.parametrize("port", ["5432", "1", "65535", "5432,,5433", " 5432", "+5432 ", ""])
def test_ports_libpq_accepts_pass(port: str) -> None:
    check_params({"port": port}, {})


def test_pgport_is_checked_when_the_string_names_no_port() -> None:
    with pytest.raises(ValueError, match=r"^PGPORT='x' is not valid"):
        check_params({}, {"PGPORT": "x"})
    check_params({"port": "5432"}, {"PGPORT": "x"})


def test_the_checked_port_is_the_one_libpq_refuses() -> None:
    """The check agrees with libpq: what it refuses, libpq refuses too, without a server."""
    for port in ("notanumber", "0", "65536"):
        with pytest.raises(psycopg.OperationalError, match="invalid"):
            psycopg.connect(f"host=127.0.0.1 port={port}", connect_timeout=2)


def test_first_line_and_describe() -> None:
    error = psycopg.OperationalError("connection failed: refused\nDETAIL: more\n")
    error.add_note("hint: start the server")
    error.add_note("not a hint")
    assert first_line(error) == "connection failed: refused"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert hints(error) == ["start the server"]
    assert describe(error) == "connection failed: refused"
    assert describe(error, with_type=True) == "OperationalError: connection failed: refused"
    assert describe(ValueError(), with_type=True) == "ValueError"
    assert describe(error, with_hints=True) == (
        "connection failed: refused; hint: start the server"
    )
    secret = psycopg.OperationalError("bad: password=hunter2\nhunter2")
    assert describe(secret, redact=redact) == "bad: password=***"
