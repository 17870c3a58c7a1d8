"""How a client reaches `FakeSalesforce`: its ``requests`` session, and a TLS fake's certificates.

Both import their third-party packages when called, so that importing
`acctsync.testing.salesforce` needs neither ``requests`` nor ``cryptography``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from requests import Session

# Salesforce's login hosts (login, test) and My Domains (acme.my, acme--dev.sandbox.my),
# as DNS names a certificate may name: a wildcard stands for one label only.
LOGIN_HOSTS: Final = ("*.salesforce.com", "*.my.salesforce.com", "*.sandbox.my.salesforce.com")


def loopback_session(url: str, timeout: float, *, verify: bool | str) -> Session:
    """A ``requests`` session that reaches the fake at ``url``.

    simple-salesforce builds every URL as ``https://`` whatever the instance URL says,
    so for a plain-HTTP fake the session turns this server's ``https://`` URLs back into
    ``http://``; a TLS fake is reached as is, trusting ``verify`` (its CA file). It sends
    what simple-salesforce sends to a login host (``https://{domain}.salesforce.com``,
    which it builds from a domain, never from a URL) to the fake too, with that host as
    its ``Host`` header, so that the fake knows which login host was asked. It
    ignores the environment (``trust_env``), whose CA bundle and proxy settings are
    meant for the real Salesforce, not for 127.0.0.1; and since simple-salesforce sets
    no timeout anywhere, it gives each request one, so that a hung test fails.
    """
    import requests

    # Nothing to rewrite for a TLS fake: its URLs are https:// already.
    https = "https" + url.removeprefix("http") + "/" if url.startswith("http:") else None
    base = url.rstrip("/")

    class LoopbackSession(requests.Session):
        def request(  # type: ignore[override]
            self, method: str, url: str, *args: Any, **kwargs: Any
        ) -> requests.Response:
            scheme, _, rest = url.partition("://")
            host, _, path = rest.partition("/")
            if scheme == "https" and host.lower().endswith(".salesforce.com"):
                url = f"{base}/{path}"
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Host": host}
            elif https is not None and url.startswith(https):
                url = "http" + url.removeprefix("https")
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, *args, **kwargs)

    session = LoopbackSession()
    session.trust_env = False
    session.verify = verify
    return session


def issue_certificates(directory: Path) -> tuple[Path, Path]:
    """Make a CA and a server certificate for 127.0.0.1 in ``directory``.

    Returns the server's certificate chain and key files; the CA's certificate is
    ``ca.pem``. The certificate names Salesforce's login hosts too, for the tunnels of
    `FakeSalesforce.proxy_url`. A CA rather than one self-signed certificate: strict
    verifiers (Python 3.13's default context among them) refuse a leaf certificate as its
    own issuer.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def usage(**granted: bool) -> x509.KeyUsage:
        names = (
            "digital_signature content_commitment key_encipherment data_encipherment"
            " key_agreement key_cert_sign crl_sign encipher_only decipher_only"
        )
        return x509.KeyUsage(**{name: granted.get(name, False) for name in names.split()})

    def builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acctsync FakeSalesforce CA")])
    ca = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
            ca_name,
            key.public_key(),
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    # The login hosts, which `FakeSalesforce.proxy_url` tunnels here.
                    *(x509.DNSName(name) for name in LOGIN_HOSTS),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    chain, key_file = directory / "server.pem", directory / "server-key.pem"
    chain.write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file
