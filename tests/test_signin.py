"""Signing in to Salesforce: each flow through the real client against the loopback org."""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import requests.adapters

pytest.importorskip("simple_salesforce")
pytest.importorskip("cryptography")

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce.api import Salesforce

from acctsync import Account, ConfigurationError, Contact, SyncEngine
from acctsync.sources.salesforce import (
    RetryPolicy,
    SalesforceError,
    SalesforceLogin,
    SalesforceSource,
)
from acctsync.testing import InMemoryStore, make_id
from acctsync.testing.salesforce import FakeSalesforce
from loopback_org import ExpiringStore

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)
KEY, SECRET = "3MVG9.acctsync-test-consumer-key", "consumer-secret-0123456789"
FIELDS = {"Account": ["Name"], "Contact": ["LastName"]}
TOKEN = "/services/oauth2/token"


def pem_keys() -> tuple[str, bytes]:
    """A new RSA key pair: the private key's PEM text, the public key's PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


PRIVATE, PUBLIC = pem_keys()
OTHER_PRIVATE, _ = pem_keys()


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=CLOCK) as fake:
        fake.put(
            *(
                Account(
                    id=make_id("001", n),
                    fields={"Name": f"A{n}"},
                    system_modstamp=T0 + timedelta(seconds=n),
                )
                for n in range(450)
            ),
            Contact(
                id=make_id("003", 1),
                account_id=make_id("001", 1),
                fields={"LastName": "Lovelace"},
                system_modstamp=T0,
            ),
        )
        fake.register_app(KEY, consumer_secret=SECRET, public_key=PUBLIC)
        yield fake


def synced(org: FakeSalesforce, login: SalesforceLogin) -> InMemoryStore:
    """A first sync of ``org`` through a client ``login`` connects, checked whole."""
    client = login.connect(session=org.session(), parse_float=Decimal)
    store = InMemoryStore()
    source = SalesforceSource(client, fields=FIELDS, login=login)
    report = SyncEngine(source=source, store=store, page_size=200, clock=lambda: CLOCK).sync()
    assert report.ok
    assert len(store.accounts()) == 450
    assert [c.fields for c in store.contacts()] == [{"LastName": "Lovelace"}]
    return store


def token_requests(org: FakeSalesforce) -> list[dict[str, str]]:
    return [r.body for r in org.requests if r.path == TOKEN]


def test_client_credentials_sign_in_on_the_my_domain_and_sync(org: FakeSalesforce) -> None:
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    synced(org, login)
    assert token_requests(org) == [{"grant_type": "client_credentials"}]  # secret in the header


@pytest.mark.parametrize("domain", ["login", "test"])
def test_jwt_bearer_signs_in_with_a_key_file_and_syncs(
    org: FakeSalesforce, tmp_path: Path, domain: str
) -> None:
    key_file = tmp_path / "server.key"
    key_file.write_text(PRIVATE)
    login = SalesforceLogin.jwt(
        consumer_key=KEY, username=org.username, private_key_file=key_file, domain=domain
    )
    synced(org, login)
    import jwt

    (request,) = token_requests(org)
    claims = jwt.decode(request["assertion"], PUBLIC, algorithms=["RS256"], audience=None,
                        options={"verify_exp": False, "verify_aud": False})  # fmt: skip
    assert (claims["iss"], claims["sub"]) == (KEY, org.username)
    assert claims["aud"] == f"https://{domain}.salesforce.com"


def test_a_password_login_and_a_session_sign_in_and_sync(org: FakeSalesforce) -> None:
    synced(
        org,
        SalesforceLogin.password(
            username=org.username, password=org.password, security_token=org.security_token
        ),
    )
    synced(org, SalesforceLogin.session(instance_url=org.url, session_id=org.session_id))


# -- Where each flow signs in: every login host reaches the loopback org, which records the
# one each sign-in was addressed to (org.sign_ins).


def signed_in_at(org: FakeSalesforce, login: SalesforceLogin) -> list[tuple[str, str]]:
    """The host and path ``login``'s one sign-in was sent to."""
    login.connect(session=org.session(), version=org.api_version)
    return org.sign_ins


# Salesforce Help, "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration": the
# app posts to its org's My Domain, which for a sandbox is
# MyDomainName--SandboxName.sandbox.my.salesforce.com ("OAuth Endpoints").
@pytest.mark.parametrize("domain", ["acme.my", "acme--dev.sandbox.my"])
def test_client_credentials_sign_in_on_the_my_domain_given(
    org: FakeSalesforce, domain: str
) -> None:
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain=domain
    )
    assert signed_in_at(org, login) == [(f"{domain}.salesforce.com", TOKEN)]


def audience(request: dict[str, str]) -> object:
    import jwt

    return jwt.decode(request["assertion"], options={"verify_signature": False})["aud"]


# Salesforce Help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration": the
# assertion's aud is https://login.salesforce.com, or https://test.salesforce.com for a
# sandbox; "OAuth Endpoints": its token endpoint is on login.salesforce.com, on
# test.salesforce.com for a sandbox, or on the org's My Domain.
@pytest.mark.parametrize(
    ("domain", "my_domain", "host"),
    [
        ("login", None, "login.salesforce.com"),
        ("test", None, "test.salesforce.com"),
        ("login", "acme.my", "acme.my.salesforce.com"),
        ("test", "acme--dev.sandbox.my", "acme--dev.sandbox.my.salesforce.com"),
    ],
    ids=["production", "sandbox", "my-domain", "sandbox-my-domain"],
)
def test_jwt_bearer_posts_to_its_host_with_login_or_test_as_audience(
    org: FakeSalesforce, domain: str, my_domain: str | None, host: str
) -> None:
    login = SalesforceLogin.jwt(
        consumer_key=KEY,
        username=org.username,
        private_key=PRIVATE,
        domain=domain,
        my_domain=my_domain,
    )
    assert signed_in_at(org, login) == [(host, TOKEN)]
    (request,) = token_requests(org)
    assert audience(request) == f"https://{domain}.salesforce.com"


# Salesforce Help, article 000385590: SOAP login() goes to login.salesforce.com for
# production, test.salesforce.com for a sandbox, or the org's My Domain.
@pytest.mark.parametrize(
    ("domain", "host"),
    [
        ("login", "login.salesforce.com"),
        ("test", "test.salesforce.com"),
        ("acme.my", "acme.my.salesforce.com"),
        ("acme--dev.sandbox.my", "acme--dev.sandbox.my.salesforce.com"),
    ],
)
def test_a_password_login_signs_in_on_the_domain_given(
    org: FakeSalesforce, domain: str, host: str
) -> None:
    login = SalesforceLogin.password(
        username=org.username,
        password=org.password,
        security_token=org.security_token,
        domain=domain,
    )
    assert signed_in_at(org, login) == [(host, f"/services/Soap/u/{org.api_version}")]


def shown_with_locals(error: BaseException) -> str:
    """The variables of ``error``'s frames in the library and the client it drives, through
    its chain, as an error reporter that records them shows them: by repr."""
    shown: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        for frame, _ in traceback.walk_tb(seen.__traceback__):
            module = str(frame.f_globals.get("__name__"))
            if module.partition(".")[0] in ("acctsync", "simple_salesforce", "requests"):
                shown.extend(f"{name} = {value!r}" for name, value in frame.f_locals.items())
        seen = seen.__cause__ or seen.__context__
    return "\n".join(shown)


def probe(secret: str) -> str:
    """A piece of ``secret`` that a repr would show as it is: a PEM's longest line."""
    return max(secret.splitlines(), key=len)


def refused(org: FakeSalesforce, login: SalesforceLogin, *secrets: str) -> SalesforceError:
    with pytest.raises(SalesforceError) as caught:
        login.connect(session=org.session())
    error = caught.value
    assert (error.__cause__, error.__context__) == (None, None)
    traced = shown_with_locals(error)
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(login)
        assert probe(secret) not in traced
    assert not error.retryable
    return error


def test_a_wrong_secret_or_key_is_refused_without_showing_it(org: FakeSalesforce) -> None:
    wrong = "not-the-consumer-secret-42"
    error = refused(
        org,
        SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret=wrong, domain="acme.my"
        ),
        wrong,
    )
    assert error.error_code == "invalid_client"
    assert "acme.my.salesforce.com was refused: invalid_client" in str(error)
    unknown = SalesforceLogin.client_credentials(
        consumer_key="3MVG9.unknown", consumer_secret=SECRET, domain="acme.my"
    )
    assert refused(org, unknown, SECRET).error_code == "invalid_client_id"
    other_key = SalesforceLogin.jwt(
        consumer_key=KEY, username=org.username, private_key=OTHER_PRIVATE
    )
    error = refused(org, other_key, OTHER_PRIVATE)
    assert (error.error_code, "invalid assertion" in str(error)) == ("invalid_grant", True)
    password = SalesforceLogin.password(
        username=org.username, password="wrong-password", security_token=org.security_token
    )
    error = refused(org, password, "wrong-password", org.security_token)
    assert error.error_code == "INVALID_LOGIN"


def test_an_expired_assertion_or_another_user_is_refused(org: FakeSalesforce) -> None:
    login = SalesforceLogin.jwt(consumer_key=KEY, username=org.username, private_key=PRIVATE)
    org.now = datetime.now(UTC) + timedelta(minutes=10)  # past the assertion's 3 minutes
    error = refused(org, login, PRIVATE)
    assert error.error_code == "invalid_grant"
    assert "expired" in str(error)
    stranger = SalesforceLogin.jwt(
        consumer_key=KEY, username="someone@else.example", private_key=PRIVATE
    )
    org.now = CLOCK
    with pytest.warns(UserWarning, match="self-authorize"):  # simple-salesforce's advice
        assert "hasn't approved" in str(refused(org, stranger, PRIVATE))


def test_settings_are_checked_and_no_repr_shows_a_secret(tmp_path: Path) -> None:
    logins = [
        SalesforceLogin.session(instance_url="https://acme.my.salesforce.com", session_id="00D!s"),
        SalesforceLogin.password(username="u@x", password="pw-123456", security_token="tok-789"),
        SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret=SECRET, domain="https://acme.my.salesforce.com/"
        ),
        SalesforceLogin.jwt(
            consumer_key=KEY,
            username="u@x",
            private_key=PRIVATE,
            domain="test",
            my_domain="acme--dev.sandbox.my",
        ),
    ]
    for login in logins:
        for secret in ("00D!s", "pw-123456", "tok-789", SECRET, PRIVATE[40:80]):
            assert secret not in repr(login)
            assert secret not in str(login)
    assert logins[2].domain == "acme.my"
    assert repr(logins[3]) == (
        "<SalesforceLogin jwt domain='test' my_domain='acme--dev.sandbox.my' username='u@x'>"
    )
    with pytest.raises(ConfigurationError, match="My Domain, not 'login'"):
        SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret=SECRET, domain="login"
        )
    with pytest.raises(ConfigurationError, match="not a Salesforce domain"):
        SalesforceLogin.password(username="u", password="p", domain="acme.my/x?")
    with pytest.raises(ConfigurationError, match="a private key file or key"):
        SalesforceLogin.jwt(consumer_key=KEY, username="u")
    missing = SalesforceLogin.jwt(
        consumer_key=KEY, username="u", private_key_file=tmp_path / "none.key"
    )
    with pytest.raises(ConfigurationError, match=r"none\.key' cannot be read"):
        missing.connect()
    not_a_key = SalesforceLogin.jwt(consumer_key=KEY, username="u", private_key="not a key")
    with pytest.raises(ConfigurationError, match="cannot sign the JWT"):
        not_a_key.connect()


def test_no_secret_reaches_rich_or_a_failed_request_s_traceback(org: FakeSalesforce) -> None:
    pretty = pytest.importorskip("rich.pretty")
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    assert SECRET not in pretty.pretty_repr(login)  # rich reads attrs fields, not __repr__
    client = login.connect(session=org.session(), parse_float=Decimal)
    org.fail(400, "MALFORMED_QUERY", times=1)
    source = SalesforceSource(client, fields=FIELDS, login=login)
    engine = SyncEngine(source=source, store=InMemoryStore(), page_size=200, clock=lambda: CLOCK)
    with pytest.raises(SalesforceError, match="MALFORMED_QUERY") as caught:
        engine.sync()
    # The client's frames hold the token in their variables: nothing of theirs is chained.
    assert (caught.value.__cause__, caught.value.__context__) == (None, None)
    assert client.session_id not in shown_with_locals(caught.value)


def test_a_session_id_with_a_line_break_is_refused_unshown(org: FakeSalesforce) -> None:
    token = org.session_id
    with pytest.raises(ConfigurationError, match="no spaces or line breaks") as caught:
        SalesforceLogin.session(instance_url=org.url, session_id=token + "\n")
    assert token not in str(caught.value)
    # A client made elsewhere with one: requests refuses the header, quoting it.
    client = Salesforce(
        instance_url=org.url, session_id=token + "\r\n", session=org.session(), version="59.0"
    )
    source = SalesforceSource(client, fields=FIELDS, retry=RetryPolicy(attempts=1))
    engine = SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK)
    with pytest.raises(SalesforceError, match="a header is not valid HTTP") as raised:
        engine.sync()
    assert token not in str(raised.value)
    assert token not in shown_with_locals(raised.value)


def test_a_malformed_setting_is_refused_unshown_for_it_may_be_a_secret(
    org: FakeSalesforce,
) -> None:
    token, secret = org.session_id, "s3cr3t/with+a=slash"
    # Two settings swapped, as two environment variables may be.
    with pytest.raises(ConfigurationError) as url:
        SalesforceLogin.session(instance_url=token, session_id=org.url)
    with pytest.raises(ConfigurationError) as domain:
        SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret="acme.my", domain=secret
        )
    # A key where its file's path goes: reading that "file" fails, naming it.
    with pytest.raises(ConfigurationError) as key:
        SalesforceLogin.jwt(consumer_key=KEY, username="u", private_key_file=PRIVATE).connect()
    said = [str(caught.value) for caught in (url, domain, key)]
    assert [token in said[0], secret in said[1], probe(PRIVATE) in said[2]] == [False] * 3
    assert "an instance URL starts with https://" in said[0]
    assert "not a Salesforce domain" in said[1]
    assert "a PEM key, not a path" in said[2]
    assert all("(its value is not shown" in text for text in said)


def test_a_my_domain_setting_takes_a_my_domain_host_only() -> None:
    # A consumer secret's shape, which passes for a host name: swapped into the domain it
    # would have been shown in the repr and the sign-in's errors, and looked up in DNS.
    secret = "8F1E6B0C94A2D7F3E5B18C6A0D2F4E9B7C3A1D5F8E2B6C0A9D4F7E1B3C5A8D2F"
    with pytest.raises(ConfigurationError) as flow:
        SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret="acme.my", domain=secret
        )
    with pytest.raises(ConfigurationError) as my_domain:
        SalesforceLogin.jwt(consumer_key=KEY, username="u", private_key=PRIVATE, my_domain=secret)
    for caught in (flow, my_domain):
        assert secret not in str(caught.value)
        assert "the org's My Domain, not this (its value is not shown)" in str(caught.value)
    with pytest.raises(ConfigurationError, match="my_domain is the org's My Domain, not 'test'"):
        SalesforceLogin.jwt(consumer_key=KEY, username="u", private_key=PRIVATE, my_domain="test")
    # Production, sandbox (enhanced and not), Developer Edition and scratch My Domains.
    for domain, host in [
        ("https://acme.my.salesforce.com/", "acme.my"),
        ("acme--dev.sandbox.my", "acme--dev.sandbox.my"),
        ("acme--uat.cs42.my.salesforce.com", "acme--uat.cs42.my"),
        ("acme-dev-ed.develop.my", "acme-dev-ed.develop.my"),
        ("page-ruby-1234.scratch.my", "page-ruby-1234.scratch.my"),
    ]:
        login = SalesforceLogin.client_credentials(
            consumer_key=KEY, consumer_secret=SECRET, domain=domain
        )
        assert login.domain == host


class MalformedTokenAnswers(requests.adapters.BaseAdapter):
    """A transport whose every answer is a 200 token answer without ``instance_url``, as a
    proxy in front of the token endpoint might give."""

    def send(self, request: requests.PreparedRequest, **_: object) -> requests.Response:
        answer = requests.Response()
        answer.status_code, answer.url, answer.request = 200, str(request.url), request
        answer.headers["Content-Type"] = "application/json"
        answer._content = b'{"access_token": "x"}'
        return answer

    def close(self) -> None:
        pass


def test_an_answer_the_client_cannot_read_is_a_library_error_without_secrets() -> None:
    session = requests.Session()
    session.mount("https://", MalformedTokenAnswers())
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    with pytest.raises(SalesforceError, match="an answer it could not read") as caught:
        login.connect(session=session)
    assert (caught.value.__cause__, caught.value.__context__) == (None, None)
    assert SECRET not in shown_with_locals(caught.value)


def test_jwt_s_audience_and_the_api_version_are_checked(org: FakeSalesforce) -> None:
    with pytest.raises(ConfigurationError, match=r"'login' or 'test'.*not 'acme\.my'.*my_domain"):
        SalesforceLogin.jwt(consumer_key=KEY, username="u", private_key=PRIVATE, domain="acme.my")
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    for version in ("v60.0", "60", "latest"):
        with pytest.raises(ConfigurationError, match=r"a number such as '59\.0'"):
            login.connect(session=org.session(), version=version)
    assert token_requests(org) == []  # refused before any request
    assert login.connect(session=org.session(), version="60.0").sf_version == "60.0"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address that takes connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_follow_signs_in_within_the_timeout(silent_server: str) -> None:
    pytest.importorskip("grpc")
    from acctsync.cli._sources import pubsub_stream

    environ = {
        "SALESFORCE_CONSUMER_KEY": KEY,
        "SALESFORCE_CONSUMER_SECRET": SECRET,
        "SALESFORCE_DOMAIN": "acme.my",
    }
    # simple-salesforce posts to https://acme.my.salesforce.com; a proxy that never
    # answers stands in for a network that does not.
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTPS_PROXY", "https_proxy"):
            patch.setenv(name, silent_server)
        for name in ("NO_PROXY", "no_proxy"):
            patch.delenv(name, raising=False)
        started = time.monotonic()
        with pytest.raises(SalesforceError, match="no answer") as caught:
            pubsub_stream(environ, topic="/data/ChangeEvents", timeout=0.5)
    assert time.monotonic() - started < 5
    assert caught.value.retryable


def test_a_session_expired_mid_sync_is_renewed_once_and_the_sync_completes(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    store = ExpiringStore(org)
    source = SalesforceSource(login.connect(session=org.session()), fields=FIELDS, login=login)
    engine = SyncEngine(source=source, store=store, page_size=200, clock=lambda: CLOCK)
    with caplog.at_level(logging.WARNING):
        report = engine.sync()
    assert report.ok
    assert len(store.accounts()) == 450
    assert len(store.contacts()) == 1
    served = org.requests
    (refused,) = [n for n, r in enumerate(served) if r.status == 401]
    # The page refused is asked again, once, after one new sign-in.
    renewal = [(r.path.rsplit("/", 1)[-1], r.status) for r in served[refused : refused + 3]]
    page = served[refused].path.rsplit("/", 1)[-1]
    assert renewal == [(page, 401), ("token", 200), (page, 200)]
    assert len(token_requests(org)) == 2  # the first sign-in, and the one renewal
    assert "session expired; signing in again (<SalesforceLogin client_credentials" in caplog.text
    assert SECRET not in caplog.text


def test_a_second_expiry_in_a_row_fails_the_sync(org: FakeSalesforce) -> None:
    login = SalesforceLogin.client_credentials(
        consumer_key=KEY, consumer_secret=SECRET, domain="acme.my"
    )
    source = SalesforceSource(
        login.connect(session=org.session()),
        fields=FIELDS,
        login=login,
        retry=RetryPolicy(attempts=1),
    )
    org.fail(401, "INVALID_SESSION_ID", times=2, path="/query")
    with pytest.raises(SalesforceError) as caught:
        SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK).sync()
    assert caught.value.error_code == "INVALID_SESSION_ID"
    assert len(token_requests(org)) == 2


def test_a_session_without_a_login_to_renew_it_fails_as_before(org: FakeSalesforce) -> None:
    session = SalesforceLogin.session(instance_url=org.url, session_id=org.session_id)
    source = SalesforceSource(session.connect(session=org.session()), fields=FIELDS, login=session)
    org.expire_sessions()
    with pytest.raises(SalesforceError) as caught:
        SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK).sync()
    assert caught.value.error_code == "INVALID_SESSION_ID"
    assert org.session_id not in str(caught.value)
