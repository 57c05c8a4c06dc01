"""Bearer tokens and TLS, on extra memgate servers started for these tests:
one with --auth-token-file, one with TLS (and a token), one with mutual TLS.

The certificates are made at test time with openssl (a throwaway CA, a
server certificate for localhost and 127.0.0.1, a client certificate); the
TLS tests are skipped where openssl is not installed.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import grpc
import pytest

import memgate
import memgate.aio

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory, token: str) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    # A comment and a second token: the server accepts any listed token.
    path.write_text(f"# memgate tokens\n{secrets.token_urlsafe(24)}\n{token}\n")
    return path


@pytest.fixture(scope="module")
def auth_server(
    start_memgate: Callable[..., str], memcached: List[str], token_file: Path
) -> str:
    """A memgate that requires a bearer token (health stays open, which is
    how start_memgate sees it is up)."""
    return start_memgate("--memcached", ",".join(memcached), "--auth-token-file", str(token_file))


def prefix() -> str:
    return f"pytest:{uuid.uuid4().hex}:"


def every_cache_call(c: memgate.Client, p: str) -> Dict[str, Callable[[], Any]]:
    """One call of each Cache method (streams consumed to the end)."""
    return {
        "get": lambda: c.get(p + "k"),
        "set": lambda: c.set(p + "k", b"v"),
        "delete": lambda: c.delete(p + "k"),
        "list": lambda: c.list(p),
        "get_many": lambda: c.get_many([p + "k"]),
        "set_many": lambda: c.set_many({p + "k": b"v"}),
        "delete_many": lambda: c.delete_many([p + "k"]),
        "get_stream": lambda: list(c.get_stream([p + "k"])),
        "set_stream": lambda: c.set_stream([(p + "k", b"v")]),
        "delete_stream": lambda: c.delete_stream([p + "k"]),
    }


def assert_unauthenticated(c: memgate.Client, match: str) -> None:
    for name, call in every_cache_call(c, prefix()).items():
        with pytest.raises(memgate.MemgateError) as excinfo:
            call()
        assert excinfo.value.code == UNAUTHENTICATED, name
        assert match in excinfo.value.details, (name, excinfo.value.details)


# -- bearer tokens -----------------------------------------------------------


def test_no_token_is_unauthenticated(auth_server: str) -> None:
    with memgate.Client(auth_server) as c:
        assert_unauthenticated(c, "missing credentials")


def test_wrong_token_is_unauthenticated(auth_server: str, token: str) -> None:
    with memgate.Client(auth_server, token=token + "x") as c:
        assert_unauthenticated(c, "not accepted")
    with memgate.Client(auth_server, token=secrets.token_urlsafe(24)) as c:
        assert_unauthenticated(c, "not accepted")


def test_right_token_works(auth_server: str, token: str) -> None:
    p = prefix()
    with memgate.Client(auth_server, token=token) as c:
        c.set(p + "a", b"1")
        assert c.get(p + "a") == b"1"
        assert c.set_many({p + "b": b"2"}) == 1
        assert c.get_many([p + "a", p + "b"]) == {p + "a": b"1", p + "b": b"2"}
        assert c.list(p) == [p + "a", p + "b"]
        assert c.set_stream([(p + "c", b"3")]) == 1
        assert list(c.get_stream([p + "c", p + "none"])) == [(p + "c", b"3"), (p + "none", None)]
        assert c.delete_stream([p + "a", p + "b", p + "c"]) == 3
        for call in every_cache_call(c, p).values():
            call()  # none raises


def test_health_needs_no_token(auth_server: str, token: str) -> None:
    with memgate.Client(auth_server) as c:
        assert c.health() == "SERVING"
        assert c.health("memgate.v1.Cache") == "SERVING"
    with memgate.Client(auth_server, token=token) as c:
        assert c.health() == "SERVING"


def assert_rejected_stream(err: memgate.MemgateError) -> None:
    """A bidirectional stream refused for its credentials.

    The server answers UNAUTHENTICATED before reading the request stream.
    grpc-aio sometimes loses that race to the stream reset that follows
    the early answer and reports INTERNAL "Internal error from Core"
    (seen in about 1 of 5 runs); either way the call must fail.
    """
    if err.code == grpc.StatusCode.INTERNAL:
        assert "Internal error from Core" in err.details, err
    else:
        assert err.code == UNAUTHENTICATED, err


def test_aio_token(auth_server: str, token: str) -> None:
    p = prefix()

    async def main() -> None:
        async with memgate.aio.Client(auth_server) as c:
            assert await c.health() == "SERVING"
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.get(p + "k")
            assert excinfo.value.code == UNAUTHENTICATED
            with pytest.raises(memgate.MemgateError) as excinfo:
                [pair async for pair in c.get_stream([p + "k"])]
            assert_rejected_stream(excinfo.value)
        async with memgate.aio.Client(auth_server, token=token[::-1]) as c:
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.set_stream([(p + "k", b"v")])
            assert excinfo.value.code == UNAUTHENTICATED
        async with memgate.aio.Client(auth_server, token=token) as c:
            await c.set(p + "k", b"v")
            assert await c.get(p + "k") == b"v"
            assert [pair async for pair in c.get_stream([p + "k"])] == [(p + "k", b"v")]
            assert await c.delete_stream([p + "k"]) == 1

    asyncio.run(main())


def test_token_on_a_server_without_auth_is_ignored(target: str) -> None:
    p = prefix()
    with memgate.Client(target, token="not-checked-by-this-server") as c:
        c.set(p + "k", b"v")
        assert c.get(p + "k") == b"v"
        c.delete(p + "k")


@pytest.mark.parametrize(
    "bad, error",
    [
        ("", ValueError),
        (" padded-token-value ", ValueError),
        ("line\nbreak-in-the-token", ValueError),
        ("non-ascii-tökén-value", ValueError),
        (b"bytes-token-value", TypeError),
    ],
)
def test_unusable_token_is_refused_at_once(target: str, bad: Any, error: type) -> None:
    with pytest.raises(error):
        memgate.Client(target, token=bad)
    with pytest.raises(error):
        memgate.aio.Client(target, token=bad)


# -- TLS ---------------------------------------------------------------------


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_file: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and the server and client certificates it signs.

    Leaf certificates signed by a CA, not one self-signed certificate: the
    server (rustls) refuses a client certificate that is itself a CA.
    """
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    days = ["-days", "1"]
    ca_subject = ["-subj", "/CN=memgate-test-ca"]
    openssl("req", "-x509", *ec, *days, *ca_subject, "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    leaves = {
        "server": "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in leaves.items():
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        key, csr, cert = f"{name}.key", f"{name}.csr", f"{name}.pem"
        openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", key, "-out", csr, cwd=d)
        ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
        extfile = ["-extfile", f"{name}.ext"]
        openssl("x509", "-req", "-in", csr, *ca, *days, *extfile, "-out", cert, cwd=d)
    return Pki(
        ca=(d / "ca.pem").read_bytes(),
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=(d / "client.pem").read_bytes(),
        client_key=(d / "client.key").read_bytes(),
        ca_file=d / "ca.pem",
    )


@pytest.fixture(scope="module")
def tls_server(
    start_memgate: Callable[..., str], memcached: List[str], pki: Pki, token_file: Path
) -> str:
    """A memgate serving TLS that also requires a token."""
    return start_memgate(
        *("--memcached", ",".join(memcached)),
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--auth-token-file", str(token_file)),
        client_options={"root_certificates": pki.ca},
    )


@pytest.fixture(scope="module")
def mtls_server(start_memgate: Callable[..., str], memcached: List[str], pki: Pki) -> str:
    """A memgate that requires a client certificate signed by the test CA."""
    return start_memgate(
        *("--memcached", ",".join(memcached)),
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-client-ca", str(pki.ca_file)),
        client_options={
            "root_certificates": pki.ca,
            "private_key": pki.client_key,
            "certificate_chain": pki.client_cert,
        },
    )


def test_tls_with_the_ca_as_root(tls_server: str, pki: Pki, token: str) -> None:
    p = prefix()
    port = tls_server.rsplit(":", 1)[1]
    # By IP address, by name, and as an https:// target; the CA as PEM bytes or text.
    roots: List[Tuple[str, Union[bytes, str]]] = [
        (tls_server, pki.ca),
        (f"localhost:{port}", pki.ca.decode()),
        (f"https://localhost:{port}", pki.ca),
    ]
    for target, root in roots:
        with memgate.Client(target, token=token, root_certificates=root) as c:
            c.set(p + "k", target)
            assert c.get(p + "k") == target.encode()
            assert list(c.get_stream([p + "k"])) == [(p + "k", target.encode())]
            assert c.health() == "SERVING"
    with memgate.Client(tls_server, root_certificates=pki.ca) as c:
        with pytest.raises(memgate.MemgateError) as excinfo:
            c.get(p + "k")
        assert excinfo.value.code == UNAUTHENTICATED  # TLS does not replace the token


def test_aio_tls(tls_server: str, pki: Pki, token: str) -> None:
    p = prefix()

    async def main() -> None:
        async with memgate.aio.Client(tls_server, token=token, root_certificates=pki.ca) as c:
            await c.set(p + "k", b"tls")
            assert await c.get(p + "k") == b"tls"
            assert await c.delete(p + "k") is True

    asyncio.run(main())


def test_tls_server_refuses_plaintext_and_unknown_cas(tls_server: str, token: str) -> None:
    port = tls_server.rsplit(":", 1)[1]
    for target in [
        tls_server,  # plaintext
        f"http://127.0.0.1:{port}",  # plaintext, spelled out
        f"https://localhost:{port}",  # TLS, but the system's roots do not know the test CA
    ]:
        with memgate.Client(target, token=token, timeout=2.0) as c:
            with pytest.raises(memgate.MemgateError) as excinfo:
                c.get("k")
            assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE, target


def test_mutual_tls(mtls_server: str, pki: Pki) -> None:
    p = prefix()
    with memgate.Client(
        mtls_server,
        root_certificates=pki.ca,
        private_key=pki.client_key,
        certificate_chain=pki.client_cert,
    ) as c:
        c.set(p + "k", b"mtls")
        assert c.get(p + "k") == b"mtls"
        c.delete(p + "k")
    with memgate.Client(mtls_server, root_certificates=pki.ca, timeout=2.0) as c:
        with pytest.raises(memgate.MemgateError) as excinfo:
            c.get(p + "k")  # no client certificate
        assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE


def test_tls_arguments_that_do_not_fit_together(target: str) -> None:
    pem = b"-----BEGIN CERTIFICATE-----"  # refused before it is parsed
    with pytest.raises(ValueError, match="http://"):
        memgate.Client("http://" + target, root_certificates=pem)
    with pytest.raises(ValueError, match="together"):
        memgate.Client(target, private_key=pem)
    with pytest.raises(ValueError, match="not both"):
        memgate.Client(target, credentials=grpc.ssl_channel_credentials(), root_certificates=pem)
