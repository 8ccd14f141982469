"""OAuth 2.1 resource-server mode end to end: JWTs signed with keys made here, a JWKS served over HTTP
by the test, the protected-resource metadata (RFC 9728), scopes that narrow the allowlist.

The refusal matrix for tokens (expired, other issuer, other audience, forged, ...) is in test_auth.py,
against the same verifier without a server; here a few of them prove the HTTP answers.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from http_server import ServerProcess, bearer, config_for, free_port, http_client, post
from mcp_client import error_text, structured
from mosquitto import Mosquitto

pytestmark = pytest.mark.anyio


class Issuer:
    """A stand-in authorization server: signing keys, and their JWKS served at /jwks on loopback."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        jwks = {
            "keys": [
                {
                    **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())),
                    "kid": "r1",
                    "alg": "RS256",
                },
                {
                    **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key())),
                    "kid": "e1",
                    "alg": "ES256",
                },
            ]
        }
        body = json.dumps(jwks).encode()
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.requests += 1
                handler.send_response(200)
                handler.send_header("content-type", "application/json")
                handler.send_header("content-length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def token(self, audience: str, *, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": audience,
            "sub": "agent-7",
            "client_id": "agent-app",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        key, kid = (self.ec, "e1") if alg == "ES256" else (self.rsa, "r1")
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    started = Issuer()
    yield started
    started.close()


@pytest.fixture(scope="module")
def server(
    broker: Mosquitto, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = free_port()
    oauth = {
        "issuer": issuer.url,
        "resource": f"http://127.0.0.1:{port}/mcp",
        "jwks_url": f"{issuer.url}/jwks",
        "required_scopes": ["mcp"],
        "scopes": {"mqtt.all": {}, "mqtt.lab": {"topics": ["lab/#"]}},
    }
    config = config_for(broker, {"oauth": oauth})
    with ServerProcess(tmp_path_factory.mktemp("oauth"), config, port=port) as started:
        started.wait_ready()
        yield started


def test_the_protected_resource_metadata_names_the_resource_and_the_issuer(
    server: ServerProcess, issuer: Issuer
) -> None:
    response = httpx2.get(f"{server.base}/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == server.url
    assert metadata["authorization_servers"] == [issuer.url]  # exactly: no "/" added
    assert metadata["bearer_methods_supported"] == ["header"]
    assert set(metadata["scopes_supported"]) == {"mcp", "mqtt.all", "mqtt.lab"}


def test_no_token_gets_401_pointing_at_the_metadata(server: ServerProcess) -> None:
    response = post(server.url)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"' in challenge


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": int(time.time()) - 600}, id="expired"),
        pytest.param({"iss": "https://evil.example.net"}, id="other-issuer"),
        pytest.param({"aud": "https://other.example.net/mcp"}, id="other-audience"),
    ],
)
def test_an_invalid_token_gets_401(server: ServerProcess, issuer: Issuer, claims: dict[str, Any]) -> None:
    token = issuer.token(claims.pop("aud", server.url), scope="mcp mqtt.all", **claims)
    assert post(server.url, **bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        pytest.param({"expired_for": 600}, "the access token has expired", id="expired"),
        # Within the verifier's 30 s leeway, but the SDK's bearer check allows none.
        pytest.param({"expired_for": 5}, "the access token has expired", id="just-expired"),
        pytest.param(
            {"aud": "https://other.example.net/mcp"}, "the access token is not valid here: ", id="other"
        ),
    ],
)
def test_a_401_says_whether_the_token_was_expired_or_wrong(
    server: ServerProcess, issuer: Issuer, claims: dict[str, Any], why: str
) -> None:
    claims = dict(claims)
    if "expired_for" in claims:  # counted from now, not from when the tests were collected
        claims["exp"] = int(time.time()) - claims.pop("expired_for")
    token = issuer.token(claims.pop("aud", server.url), scope="mcp mqtt.all", **claims)
    response = post(server.url, **bearer(token))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'error="invalid_token", error_description="{why}' in challenge
    assert f'resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error_description"].startswith(why)


def test_a_token_without_the_required_scope_gets_403(server: ServerProcess, issuer: Issuer) -> None:
    response = post(server.url, **bearer(issuer.token(server.url, scope="mqtt.all")))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(("mode", "alg"), [("legacy", "RS256"), ("auto", "ES256")])
async def test_a_valid_token_works(server: ServerProcess, issuer: Issuer, mode: str, alg: str) -> None:
    token = issuer.token(server.url, alg=alg, scope="mcp mqtt.all")
    async with http_client(server.url, token, mode) as client:
        published = await client.call_tool("mqtt_publish", {"topic": "actuators/fan", "payload": "on"})
        assert structured(published)["topic"] == "actuators/fan"


async def test_a_scope_narrows_the_allowlist(server: ServerProcess, issuer: Issuer) -> None:
    async with http_client(server.url, issuer.token(server.url, scope="mcp mqtt.lab")) as client:
        assert structured(await client.call_tool("mqtt_publish", {"topic": "lab/x", "payload": "1"}))
        refused = await client.call_tool("mqtt_publish", {"topic": "actuators/fan", "payload": "on"})
        assert error_text(refused).startswith("permission denied:")


async def test_a_token_without_a_mapped_scope_may_do_nothing(server: ServerProcess, issuer: Issuer) -> None:
    async with http_client(server.url, issuer.token(server.url, scope="mcp")) as client:
        refused = await client.call_tool("mqtt_publish", {"topic": "lab/x", "payload": "1"})
        assert error_text(refused).startswith("permission denied:")


def test_the_signing_keys_are_fetched_once_for_many_requests(server: ServerProcess, issuer: Issuer) -> None:
    before = issuer.requests
    for _ in range(5):
        assert post(server.url, **bearer(issuer.token(server.url, scope="mcp"))).status_code == 200
    assert issuer.requests - before <= 1


def test_an_unreadable_jwks_file_stops_the_server_at_start(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    (tmp_path / "jwks.json").write_text("{}")
    oauth = {
        "issuer": "https://auth.example.net",
        "resource": "https://mcp.example.net/mcp",
        "jwks_file": "jwks.json",
    }
    with pytest.raises(RuntimeError, match="not a JWKS document"):
        ServerProcess(tmp_path, config_for(broker, {"oauth": oauth})).start()
