"""TLS and an ACL user work for every process: client, CLI, node agent, worker.

The test makes its own CA and server certificate, runs redis-server with TLS
only, and creates an ACL user whose password needs percent-encoding in a URL
and whose keys are limited to the prefix and arq's job keys. A node agent,
``byzerllm deploy`` and a chat then use one ``rediss://`` URL with
``?ssl_ca_certs=``. Skipped only when no redis-server here was built with TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from byzerllm.broker.embedded import redis_server_binary
from byzerllm.broker.settings import BrokerSettings
from tests.redis_server import free_port
from tests.test_deploy import Cluster
from tests.waiting import until_sync

pytestmark = pytest.mark.timeout(240)

USER = "byz-app"
PASSWORD = "p@ss:w/rd%#?&= +"  # every character here means something in a URL
PREFIX = "tlsacl"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("byzerllm test CA"))
        .issuer_name(_name("byzerllm test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "server.pem", "server.key"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def _candidates() -> list[str]:
    """Every redis-server here: the one tests use first, then the rest on PATH."""
    found: list[str] = []
    try:
        found.append(redis_server_binary())
    except Exception:
        pass
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        path = shutil.which("redis-server", path=folder)
        if path and os.path.realpath(path) not in {os.path.realpath(p) for p in found}:
            found.append(path)
    return found


class TLSRedis:
    """redis-server listening with TLS only, on a free port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca, self.cert, self.key = make_certificates(directory)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=5
        )

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True  # it exited: start() reads why
        try:
            with self.admin() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> TLSRedis:
        reasons = []
        for binary in _candidates():
            log = self.dir / "redis.log"
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    [
                        binary,
                        "--port",
                        "0",
                        "--tls-port",
                        str(self.port),
                        "--bind",
                        "127.0.0.1",
                        "--tls-cert-file",
                        str(self.cert),
                        "--tls-key-file",
                        str(self.key),
                        "--tls-ca-cert-file",
                        str(self.ca),
                        "--tls-auth-clients",
                        "no",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.dir),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            until_sync(self._answers, f"{binary} to answer over TLS or exit")
            if self.proc.poll() is None:
                return self
            reasons.append(f"{binary}: {log.read_text(errors='replace').strip()[-300:]}")
        pytest.skip("no redis-server here has TLS support: " + " | ".join(reasons))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def tls_redis() -> Iterator[TLSRedis]:
    directory = Path(tempfile.mkdtemp(prefix="byzerllm-tls-"))
    server = TLSRedis(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_node_agent_deploy_and_chat_over_tls_with_an_acl_user(tls_redis, tmp_path):
    with tls_redis.admin() as admin:
        admin.execute_command(
            "ACL", "SETUSER", USER, "on", f">{PASSWORD}",
            f"~{PREFIX}:*", "~arq:*", f"&{PREFIX}:*", "+@all",
        )  # fmt: skip
        admin.execute_command("ACL", "SETUSER", "default", "off")  # only the URL's user works
        url = (
            f"rediss://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_redis.port}/0"
            f"?ssl_ca_certs={quote(str(tls_redis.ca), safe='/')}"
        )
        settings = BrokerSettings(redis_url=url, prefix=PREFIX)
        cluster = Cluster(settings, tmp_path)
        try:
            cluster.node("n1")
            deployed = cluster.cli(
                "deploy", "--pretrained_model_type", "custom/echo", "--model", "secure_echo"
            )
            assert deployed.returncode == 0, deployed.stderr
            assert "1/1 worker(s) ready" in deployed.stdout
            chat = cluster.cli("chat", "secure_echo", "over tls")
            assert chat.stdout.strip() == "over tls", chat.stderr
            listed = cluster.cli("node", "list")
            assert "n1" in listed.stdout, listed.stderr
        finally:
            cluster.stop()
    with redis.Redis.from_url(url) as client:  # the default user is off: ours, by URL
        for key in client.scan_iter("*"):
            name = key.decode()
            assert name.startswith((f"{PREFIX}:", "arq:")), name
            if name.startswith("arq:") and name != "arq:abort":
                assert f":{PREFIX}:" in name, f"arq key {name} does not name the prefix"
    output = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert PASSWORD not in output and quote(PASSWORD, safe="") not in output
