"""The sign-in of `FakeSalesforce`'s org: its OAuth 2.0 token endpoint and SOAP ``login()``.

`SignIn` holds the apps a test registered (`App`) and the user they sign in as, and
answers ``POST /services/oauth2/token`` for two grants, as Salesforce Help describes them:

- ``client_credentials`` ("OAuth 2.0 Client Credentials Flow for Server-to-Server
  Integration"): the consumer key and secret, in an ``Authorization: Basic`` header or as
  ``client_id`` and ``client_secret`` in the form;
- ``urn:ietf:params:oauth:grant-type:jwt-bearer`` ("OAuth 2.0 JWT Bearer Flow for
  Server-to-Server Integration"): an RS256 ``assertion`` signed with the key whose
  certificate the app holds, with ``iss`` the consumer key, ``sub`` the username, ``aud``
  ``https://login.salesforce.com`` or ``https://test.salesforce.com`` and ``exp`` a time
  (in seconds since 1970, a number or a numeral) not yet past on the org's clock.

and ``POST /services/Soap/u/{version}`` (SOAP API Developer Guide, ``login()``) for a
username and a password followed by the security token. Success is the access token and
``instance_url`` (or the SOAP ``sessionId`` and ``serverUrl``); a failure is Salesforce's
``{"error": ..., "error_description": ...}`` (a SOAP fault). PyJWT is imported when an
assertion comes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote
from xml.sax.saxutils import escape

from attrs import Factory, define, frozen

from acctsync.testing.salesforce._describe import ORG_ID, USER_ID
from acctsync.testing.salesforce._rest import Request, Response

TOKEN_PATH: Final = "/services/oauth2/token"
SOAP_PATH: Final = re.compile(r"/services/Soap/u/(?P<version>\d+\.\d+)/?")
_JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_AUDIENCES: Final = ("https://login.salesforce.com", "https://test.salesforce.com")


@frozen
class App:
    """An External Client App: its consumer key, and its secret or certificate's key (PEM)."""

    consumer_key: str
    consumer_secret: str | None
    public_key: bytes | None


@define
class SignIn:
    """Who may sign in to the org, and how; the caller holds the org's lock."""

    username: str
    password: str
    security_token: str
    apps: dict[str, App] = Factory(dict)

    def token(
        self, request: Request, now: datetime, instance_url: str, issue: Callable[[], str]
    ) -> Response:
        """The answer to a token request; ``issue`` makes a new access token."""
        if request.method != "POST":
            return _refused("invalid_request", "must use HTTP POST")
        form = request.body if isinstance(request.body, dict) else {}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            refusal = self._client_credentials(request, form)
        elif grant == _JWT_BEARER:
            refusal = self._jwt_bearer(form.get("assertion"), now)
        else:
            refusal = ("unsupported_grant_type", "grant type not supported")
        if refusal is not None:
            return _refused(*refusal)
        body = {
            "access_token": issue(),
            "instance_url": instance_url,
            "id": f"{instance_url}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "scope": "api",
            "issued_at": str(int(now.timestamp() * 1000)),
        }
        return 200, "application/json;charset=UTF-8", json.dumps(body).encode()

    def _client_credentials(
        self, request: Request, form: dict[str, str]
    ) -> tuple[str, str] | None:
        key, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(encoded, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return ("invalid_client", "invalid client credentials")
            # RFC 6749, section 2.3.1: each part is form-encoded before it is joined.
            key, _, secret = (unquote(part) for part in pair.partition(":"))
        app = self.apps.get(key or "")
        if app is None:
            return ("invalid_client_id", "client identifier invalid")
        if app.consumer_secret is None or secret != app.consumer_secret:
            return ("invalid_client", "invalid client credentials")
        return None

    def _jwt_bearer(self, assertion: object, now: datetime) -> tuple[str, str] | None:
        import jwt

        if not isinstance(assertion, str):
            return ("invalid_grant", "invalid assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return ("invalid_grant", "invalid assertion")
        app = self.apps.get(str(claims.get("iss", "")))
        if app is None:
            return ("invalid_client_id", "client identifier invalid")
        if header.get("alg") != "RS256" or app.public_key is None:
            return ("invalid_grant", "invalid assertion")
        try:
            # The claims are checked below, as Salesforce checks them: PyJWT would refuse
            # the numeral ``exp`` that simple-salesforce sends and Salesforce takes.
            jwt.decode(
                assertion,
                app.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return ("invalid_grant", "invalid assertion")
        audience = claims.get("aud")
        if audience not in _AUDIENCES:
            return ("invalid_grant", f"audience is invalid [audience={audience}]")
        if claims.get("sub") != self.username:
            return ("invalid_grant", "user hasn't approved this consumer")
        expires = claims.get("exp")
        try:
            expiry = float(expires) if isinstance(expires, int | float | str) else None
        except ValueError:
            expiry = None
        if expiry is None or expiry <= now.timestamp():
            return ("invalid_grant", "invalid assertion: expired or without exp")
        return None

    def soap_login(
        self, request: Request, raw: bytes, instance_url: str, issue: Callable[[], str]
    ) -> Response:
        """The answer to a SOAP ``login()`` whose envelope is ``raw``."""
        text = raw.decode("utf-8", "replace")
        username = _element(text, "username")
        password = _element(text, "password")
        if username != self.username or password != self.password + self.security_token:
            fault = (
                "<soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>"
                "INVALID_LOGIN: Invalid username, password, security token; or user locked"
                " out.</faultstring><detail><sf:LoginFault><sf:exceptionCode>INVALID_LOGIN"
                "</sf:exceptionCode><sf:exceptionMessage>Invalid username, password,"
                " security token; or user locked out.</sf:exceptionMessage></sf:LoginFault>"
                "</detail></soapenv:Fault>"
            )
            return 500, "text/xml;charset=UTF-8", _envelope(fault).encode()
        match = SOAP_PATH.fullmatch(request.path)
        version = match["version"] if match else "59.0"
        server = escape(f"{instance_url}/services/Soap/u/{version}/{ORG_ID[:15]}")
        result = (
            f"<loginResponse><result><serverUrl>{server}</serverUrl>"
            f"<sessionId>{escape(issue())}</sessionId><userId>{USER_ID}</userId>"
            "</result></loginResponse>"
        )
        return 200, "text/xml;charset=UTF-8", _envelope(result).encode()


def _refused(error: str, description: str) -> Response:
    body = {"error": error, "error_description": description}
    return 400, "application/json;charset=UTF-8", json.dumps(body).encode()


def _element(text: str, name: str) -> str | None:
    from html import unescape

    found = re.search(rf"<(?:\w+:)?{name}>(.*?)</(?:\w+:)?{name}>", text, re.DOTALL)
    return None if found is None else unescape(found[1])


def _envelope(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope'
        ' xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
        ' xmlns="urn:partner.soap.sforce.com">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )


def form_fields(raw: bytes) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` body, one value a name."""
    from urllib.parse import parse_qsl

    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
