"""Certificates for the TLS tests, made here with ``trustme`` (nothing on disk outlives a test).

``pki`` holds one CA, a server certificate for ``localhost`` and ``127.0.0.1`` and a
client certificate, each written as PEM files, plus helpers for client contexts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme", reason="trustme (a test dependency) makes the certificates")


@dataclass
class Pki:
    ca: trustme.CA
    dir: Path
    ca_pem: str
    cert_pem: str  # server certificate chain
    key_pem: str  # server key
    both_pem: str  # key and chain in one file
    client_pem: str  # client key and certificate in one file
    client_ca_pem: str  # the CA client certificates are checked against

    def client_context(self, *, cert: bool = False, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA (and presents a client cert)."""
        ctx = ssl.create_default_context(cafile=self.ca_pem)
        if cert:
            ctx.load_cert_chain(self.client_pem)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def renew(self, name: str = "renewed") -> tuple[str, str]:
        """A second server certificate from the same CA: ``(cert_pem, key_pem)`` paths."""
        cert = self.ca.issue_cert("localhost", "127.0.0.1", common_name=name)
        cert_pem = self.dir / f"{name}-cert.pem"
        key_pem = self.dir / f"{name}-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_pem))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_pem), append=True)
        cert.private_key_pem.write_to_path(str(key_pem))
        return str(cert_pem), str(key_pem)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="server")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(d / "cert.pem"), append=i > 0)
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(d / "both.pem"))
    client_ca = trustme.CA(organization_name="Client CA")
    client = client_ca.issue_cert("alice@example.org", common_name="alice")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    return Pki(
        ca=ca,
        dir=d,
        ca_pem=str(d / "ca.pem"),
        cert_pem=str(d / "cert.pem"),
        key_pem=str(d / "key.pem"),
        both_pem=str(d / "both.pem"),
        client_pem=str(d / "client.pem"),
        client_ca_pem=str(d / "client-ca.pem"),
    )
