"""TLS settings that cannot work say what is wrong, in one line; OpenSSL never prompts.

An encrypted key without a password used to make OpenSSL ask for it on the terminal
(at start, and again on every SIGHUP reload); without a terminal it failed with
``cannot read (Invalid argument)``. Garbage, an empty file, a certificate without its
key and a wrong password all gave ``[SSL] PEM lib``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from mioreactor import Server
from mioreactor.workers.tls.context import TlsConfig, TlsError

from tests.cli.apps import app
from tests.cli.proc import REACTOR, ROOT, free_port
from tests.tls.conftest import Pki

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"


def encrypted_key(pki: Pki, path: Path, traditional: bool = False) -> str:
    """The server key of ``pki`` encrypted with ``PASSWORD`` (PKCS#8 or the old format)."""
    key = serialization.load_pem_private_key(Path(pki.key_pem).read_bytes(), None)
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if traditional
           else serialization.PrivateFormat.PKCS8)
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(PASSWORD.encode())
    ))
    return str(path)


def message(config: TlsConfig) -> str:
    with pytest.raises(TlsError) as info:
        config.context()
    return str(info.value)


def test_a_file_with_no_certificate_says_so(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    assert "has no certificate in it" in message(TlsConfig(str(garbage), pki.key_pem))
    assert f"--certfile {empty} is empty" in message(TlsConfig(str(empty), pki.key_pem))
    # the key where the certificate should be
    assert "has no certificate in it" in message(TlsConfig(pki.key_pem))


def test_a_certificate_without_its_key_says_so(pki: Pki, tmp_path: Path) -> None:
    assert "has no private key in it: give the key with --keyfile" in message(
        TlsConfig(pki.cert_pem))
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key\n")
    assert f"--keyfile {garbage} has no private key in it" in message(
        TlsConfig(pki.cert_pem, str(garbage)))


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "traditional"])
def test_an_encrypted_key_without_a_password_names_the_option(
    pki: Pki, tmp_path: Path, traditional: bool
) -> None:
    key = encrypted_key(pki, tmp_path / "enc.pem", traditional)
    assert message(TlsConfig(pki.cert_pem, key)) == (
        f"--keyfile {key}: the private key is encrypted: set --keyfile-password or "
        "REACTOR_KEYFILE_PASSWORD"
    )
    assert "wrong --keyfile-password" in message(TlsConfig(pki.cert_pem, key, "wrong"))
    TlsConfig(pki.cert_pem, key, PASSWORD).context()  # the right one loads


def test_the_password_callback_refuses_rather_than_prompt(pki: Pki, tmp_path: Path) -> None:
    # Past the PEM check (a key OpenSSL finds encrypted without the usual markers would
    # reach it): the callback OpenSSL calls raises instead of reading the terminal.
    config = TlsConfig(pki.cert_pem, encrypted_key(pki, tmp_path / "enc.pem"))
    with pytest.raises(TlsError, match="REACTOR_KEYFILE_PASSWORD"):
        config._password()


def test_a_sighup_reload_to_an_encrypted_key_fails_in_one_line(pki: Pki, tmp_path: Path) -> None:
    cert = shutil.copy(pki.cert_pem, tmp_path / "cert.pem")
    key = shutil.copy(pki.key_pem, tmp_path / "key.pem")
    with Server(app, bind="127.0.0.1:0", workers=1, ssl=TlsConfig(str(cert), str(key))) as server:
        encrypted_key(pki, Path(key))  # the renewal came encrypted; no password configured
        with pytest.raises(TlsError, match="set --keyfile-password or REACTOR_KEYFILE_PASSWORD"):
            server.reload_tls()


def test_the_cli_says_it_in_one_line_without_a_terminal(pki: Pki, tmp_path: Path) -> None:
    key = encrypted_key(pki, tmp_path / "enc.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    result = subprocess.run(
        [*REACTOR, "serve", "-b", f"127.0.0.1:{free_port()}", "--certfile", pki.cert_pem,
         "--keyfile", key], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, check=False, start_new_session=True,  # no controlling terminal
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: --keyfile {key}: the private key is encrypted: set --keyfile-password or "
        "REACTOR_KEYFILE_PASSWORD"
    ]
