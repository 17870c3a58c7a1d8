"""How `SalesforceSource` signs in: one record per flow, and the client it makes.

Theory of operation: `SalesforceLogin` holds the settings of one sign-in flow and makes a
``simple_salesforce.Salesforce`` client with them through simple-salesforce's own login
function, each time `SalesforceLogin.connect` is called. The source calls it again, once,
when Salesforce answers ``INVALID_SESSION_ID`` in the middle of a sync.

The client is made from the session the login gives, not from the credentials, because a
client made from credentials signs in again by itself on every expired session, up to
three times per request and without a word: the source's rule (renew once, log it, and
fail on a second expiry in a row) would never see an expiry.

Since Spring '26, new connected apps are External Client Apps, which offer the OAuth 2.0
client credentials flow (on the org's My Domain) and the JWT bearer flow, and no
username-password flow (Salesforce Help, article 005228017). The session and password
flows remain for older apps and for tokens got elsewhere.

Secrets (password, security token, consumer secret, private key, session id) are never
shown: not in a repr (``rich``'s, which reads the fields, included), nor in an error, where
the login's own answer is searched for them too. Nor is a setting refused as malformed:
settings come in pairs (an instance URL and a session id, a domain and a consumer secret),
and the one refused may be the secret given in the other's place, as a key file's path
may be the key itself. A failed sign-in is raised with nothing chained, and no frame of
this module keeps the secrets in a variable: an error reporter that records each frame's
local variables finds none.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from attrs import field, frozen

from acctsync._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    import requests
    from simple_salesforce.api import Salesforce

__all__ = ["SalesforceLogin", "timed_session"]

Flow = Literal["session", "password", "client_credentials", "jwt"]
# Salesforce's own login hosts: login.salesforce.com, and test.salesforce.com for sandboxes.
_SHARED_HOSTS: Final = ("login", "test")
# What simple-salesforce puts in its URLs after ``v``: ``59.0``.
_VERSION: Final = re.compile(r"[0-9]+\.[0-9]+")


def _domain(value: str) -> str:
    """``value`` as simple-salesforce's ``domain``: the host without ``.salesforce.com``."""
    if not isinstance(value, str):
        raise ConfigurationError(f"a Salesforce domain must be a text: {type(value).__name__}")
    host = value.strip().removeprefix("https://").rstrip("/").removesuffix(".salesforce.com")
    labels = host.split(".")
    if not host or not all(
        label and all(c.isalnum() or c == "-" for c in label) for label in labels
    ):
        raise ConfigurationError(
            "this is not a Salesforce domain (its value is not shown): give 'login', 'test'"
            " (a sandbox), or a My Domain such as 'acme.my' or 'acme--dev.sandbox.my'"
        )
    return host


def _my_domain(value: str, lead: str) -> str:
    """``value`` as `_domain` has it, where it must be the org's My Domain (``lead`` says
    so in the error).

    Every My Domain login host ends in ``.my.salesforce.com``: ``acme.my``,
    ``acme--dev.sandbox.my``, ``acme-dev-ed.develop.my`` (Salesforce Help, "My Domain URL
    Formats"). Any other value is refused unshown, but for the shared hosts: it may be the
    consumer secret given in its place.
    """
    host = _domain(value)
    if not host.endswith(".my"):
        refused = repr(host) if host in _SHARED_HOSTS else "this (its value is not shown)"
        raise ConfigurationError(
            f"{lead} the org's My Domain, not {refused}: give a domain such as"
            " 'acme.my' or 'acme--dev.sandbox.my'"
        )
    return host


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"the Salesforce sign-in needs {name}")
    return value


def _session_id(value: object) -> str:
    text = _text("a session id", value)
    # It goes into a header; ``requests`` would refuse it there with its text in the error.
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ConfigurationError(
            "a session id has no spaces or line breaks: this one has (its value is not shown)"
        )
    return text


def timed_session(timeout: float) -> requests.Session:
    """A ``requests`` session whose every request without a timeout of its own gets
    ``timeout`` seconds: simple-salesforce sets none, and a lost connection would hang."""
    import requests

    class TimedSession(requests.Session):
        def request(  # type: ignore[override]
            self, method: str, url: str, *args: Any, **kwargs: Any
        ) -> requests.Response:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, *args, **kwargs)

    return TimedSession()


@frozen(kw_only=True, repr=False)
class SalesforceLogin:
    """The settings of one way to sign in to Salesforce; make it with a flow's constructor.

    - `session`: a session id (an access token) got elsewhere; it cannot be renewed.
    - `password`: a username, password and security token (SOAP ``login()``).
    - `client_credentials`: an External Client App's consumer key and secret, on the org's
      My Domain; Salesforce signs in as the app's run-as user.
    - `jwt`: the JWT bearer flow: a consumer key, a username, and the private key whose
      certificate the app holds.

    ``domain`` is the login host without ``.salesforce.com``: ``login``, ``test`` for a
    sandbox, or a My Domain (``acme.my``, ``acme--dev.sandbox.my``). `connect` signs in
    and returns a client. The repr shows the flow, the host and the username only.
    """

    flow: Flow
    domain: str = "login"
    instance_url: str | None = None
    username: str | None = None
    consumer_key: str | None = None
    my_domain: str | None = None
    private_key_file: Path | None = None
    _secrets: dict[str, str] = field(factory=dict, alias="secrets", repr=False)

    def __repr__(self) -> str:
        shown = [f"domain={self.domain!r}"]
        if self.instance_url is not None:
            shown = [f"instance_url={self.instance_url!r}"]
        if self.my_domain is not None:
            shown.append(f"my_domain={self.my_domain!r}")
        if self.username is not None:
            shown.append(f"username={self.username!r}")
        return f"<SalesforceLogin {self.flow} {' '.join(shown)}>"

    __str__ = __repr__

    @classmethod
    def session(cls, *, instance_url: str, session_id: str) -> SalesforceLogin:
        """A session id got elsewhere (an OAuth flow, ``sf org display``)."""
        url = _text("an instance URL", instance_url).rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError(
                "an instance URL starts with https://: this one does not (its value is not"
                " shown: it may be the session id, given in its place)"
            )
        return cls(
            flow="session",
            instance_url=url,
            secrets={"session_id": _session_id(session_id)},
        )

    @classmethod
    def password(
        cls, *, username: str, password: str, security_token: str = "", domain: str = "login"
    ) -> SalesforceLogin:
        """A username-password login; the token may be empty from a trusted IP range."""
        if not isinstance(security_token, str):
            raise ConfigurationError("a security token is a text (empty when not needed)")
        return cls(
            flow="password",
            domain=_domain(domain),
            username=_text("a username", username),
            secrets={
                "password": _text("a password", password),
                "security_token": security_token,
            },
        )

    @classmethod
    def client_credentials(
        cls, *, consumer_key: str, consumer_secret: str, domain: str
    ) -> SalesforceLogin:
        """The OAuth 2.0 client credentials flow of an External Client App.

        ``domain`` is the org's My Domain: Salesforce serves this flow there only, not on
        ``login`` or ``test`` (Salesforce Help, "OAuth 2.0 Client Credentials Flow for
        Server-to-Server Integration").
        """
        return cls(
            flow="client_credentials",
            domain=_my_domain(domain, "the client credentials flow signs in on"),
            consumer_key=_text("a consumer key", consumer_key),
            secrets={"consumer_secret": _text("a consumer secret", consumer_secret)},
        )

    @classmethod
    def jwt(
        cls,
        *,
        consumer_key: str,
        username: str,
        private_key_file: str | Path | None = None,
        private_key: str | None = None,
        domain: str = "login",
        my_domain: str | None = None,
    ) -> SalesforceLogin:
        """The OAuth 2.0 JWT bearer flow, signing with a private key (a file, or PEM text).

        The assertion's audience is ``https://{domain}.salesforce.com``, which Salesforce
        takes as ``login`` or ``test`` only ("OAuth 2.0 JWT Bearer Flow for Server-to-Server
        Integration", ``aud``), so ``domain`` is one of them; ``my_domain``, when given, is
        the host the assertion is posted to instead of ``domain``'s.
        """
        if (private_key_file is None) == (private_key is None):
            raise ConfigurationError("the JWT bearer flow needs a private key file or key")
        if private_key_file is not None and any(
            mark in str(private_key_file) for mark in ("\n", "-----BEGIN")
        ):
            # Else the file's read error, and rich's repr of the field, would show the key.
            raise ConfigurationError(
                "a private key file is given by its path: this is a PEM key, not a path"
                " (its value is not shown)"
            )
        audience = _domain(domain)
        if audience not in _SHARED_HOSTS:
            # Salesforce answers "invalid_grant: audience is invalid" to any other.
            raise ConfigurationError(
                f"the JWT bearer flow's domain is its audience, 'login' or 'test' (a sandbox),"
                f" not {audience!r}: give the org's My Domain as my_domain"
            )
        secrets = {} if private_key is None else {"private_key": _text("a key", private_key)}
        return cls(
            flow="jwt",
            domain=audience,
            my_domain=(
                None
                if my_domain is None
                else _my_domain(my_domain, "the JWT bearer flow's my_domain is")
            ),
            username=_text("a username", username),
            consumer_key=_text("a consumer key", consumer_key),
            private_key_file=None if private_key_file is None else Path(private_key_file),
            secrets=secrets,
        )

    @property
    def renewable(self) -> bool:
        """Whether `connect` can sign in afresh: every flow but `session`."""
        return self.flow != "session"

    def connect(
        self,
        *,
        session: requests.Session | None = None,
        version: str | None = None,
        parse_float: Callable[[str], Any] | None = None,
    ) -> Salesforce:
        """Sign in, and return a client of the session Salesforce gives.

        ``session`` is the ``requests`` session to send through (a timeout, a proxy),
        ``version`` the API version, ``parse_float`` how the client reads numbers
        (``decimal.Decimal`` keeps currency exact). A refused login raises
        `SalesforceError` with Salesforce's code (``invalid_client``, ``invalid_grant``,
        ``INVALID_LOGIN``...); a private key that cannot be read, `ConfigurationError`.
        """
        from simple_salesforce.api import Salesforce

        if version is not None and not _VERSION.fullmatch(version):
            raise ConfigurationError(
                f"a Salesforce API version is a number such as '59.0': {version!r}"
            )
        options: dict[str, Any] = {"session": session, "parse_float": parse_float}
        if version is not None:
            options["version"] = version
        if self.flow == "session":
            instance_url, session_id = self.instance_url, self._secrets["session_id"]
        else:
            session_id, instance = self._sign_in(session, version)
            instance_url = f"https://{instance}"
        return Salesforce(instance_url=instance_url, session_id=session_id, **options)

    def _sign_in(self, session: requests.Session | None, version: str | None) -> tuple[str, str]:
        import jwt
        import requests
        from simple_salesforce import login
        from simple_salesforce.exceptions import SalesforceAuthenticationFailed

        from acctsync.sources.salesforce import SalesforceError

        host = f"{self.my_domain or self.domain}.salesforce.com"
        what = f"the Salesforce sign-in ({self.flow}) at {host}"
        failure: Exception
        try:
            # The arguments, secrets and all, in no variable of this frame: see the module.
            session_id, instance = login.SalesforceLogin(**self._arguments(session, version))
        except ConfigurationError:  # a private key file that cannot be read
            raise
        except SalesforceAuthenticationFailed as error:
            code = error.code if isinstance(error.code, str) else None
            detail = self._hidden(f"{error.code}: {error.auth_message}")
            failure = SalesforceError(
                f"{what} was refused: {detail}", status=error.status, error_code=code
            )
        except requests.RequestException as error:
            failure = SalesforceError(
                f"{what} failed: no answer ({type(error).__name__})", retryable=True
            )
        except (ValueError, TypeError, jwt.PyJWTError) as error:
            failure = ConfigurationError(
                f"the private key cannot sign the JWT ({self._detail(error)})"
                if self.flow == "jwt"
                else f"{what} cannot be sent ({self._detail(error)})"
            )
        except Exception as error:  # an answer simple-salesforce could not read, say
            detail = self._detail(error)
            failure = SalesforceError(f"{what} failed: an answer it could not read ({detail})")
        else:
            if not isinstance(session_id, str) or not isinstance(instance, str) or not instance:
                raise SalesforceError(f"{what} gave no access token and instance URL")
            return session_id, instance
        # Raised outside the handler, so with nothing chained: simple-salesforce's frames
        # hold the secrets in their variables.
        raise failure

    def _arguments(self, session: requests.Session | None, version: str | None) -> dict[str, Any]:
        """simple-salesforce's ``SalesforceLogin`` arguments for this flow."""
        arguments: dict[str, Any] = {"session": session, "domain": self.domain}
        if version is not None:
            arguments["sf_version"] = version
        if self.flow == "password":
            arguments.update(username=self.username, **self._secrets)
        elif self.flow == "client_credentials":
            arguments.update(consumer_key=self.consumer_key, **self._secrets)
        else:
            arguments.update(
                username=self.username,
                consumer_key=self.consumer_key,
                instance_url=self.my_domain,
                privatekey=self._private_key(),
            )
        return arguments

    def _private_key(self) -> str:
        if self.private_key_file is None:
            return self._secrets["private_key"]
        try:
            return self.private_key_file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not a PEM text file"
            raise ConfigurationError(
                f"the private key file {str(self.private_key_file)!r} cannot be read: {reason}"
            ) from None

    def _detail(self, error: Exception) -> str:
        """What ``error`` says, secrets hidden; its type alone in the JWT flow, whose key,
        read from a file, `_hidden` does not know."""
        if self.flow == "jwt":
            return type(error).__name__
        return self._hidden(f"{type(error).__name__}: {error}")

    def _hidden(self, text: str) -> str:
        """``text`` with any secret of this login in it starred out."""
        for secret in self._secrets.values():
            if len(secret) >= 4:  # a shorter one would star out ordinary words
                text = text.replace(secret, "***")
        return text
