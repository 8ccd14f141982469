"""API key hashes, grants (narrowed allowlists) and the two token verifiers, without a server.

The JWT cases use keys made here with `cryptography`; tests/test_http_oauth.py drives the same
verifier end to end.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import pathlib
import time
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from strategies import FAST, plain_filters, topic_matched_by

from mcpmqtt.config import apikeys
from mcpmqtt.config.http import ApiKey, OAuthSettings
from mcpmqtt.rules.grants import Grant, grant_problems, narrow
from mcpmqtt.rules.policy import Allowlist, Permission, Rule
from mcpmqtt.transports import auth
from mcpmqtt.transports.auth import CLIENT_ADDRESS, Access, ApiKeyVerifier, JwtVerifier

pytestmark = pytest.mark.anyio

READ: frozenset[Permission] = frozenset({"read"})
WRITE: frozenset[Permission] = frozenset({"write"})
BOTH: frozenset[Permission] = frozenset({"read", "write"})

PLANT = Allowlist(
    [
        Rule("sensors/+/temperature", READ, "temperatures"),
        Rule("actuators/#", WRITE, "actuators"),
        Rule("lab/#", BOTH, "the lab"),
        Rule("$share/workers/jobs/#", READ, "job queue"),
        Rule("lab/locks/#", BOTH, deny=True),
    ]
)

# ---- API key hashes ------------------------------------------------------------------------------------


def test_a_key_matches_its_hash_and_nothing_else() -> None:
    key = apikeys.new_key()
    stored = apikeys.hash_key(key, log_n=10)
    assert stored.matches(key)
    assert not stored.matches(key + "x")
    assert not stored.matches(apikeys.new_key())


def test_a_hash_survives_its_text_form() -> None:
    key = apikeys.new_key()
    text = str(apikeys.hash_key(key, log_n=10))
    assert text.startswith("$scrypt$ln=10,r=8,p=1$")
    assert apikeys.parse_hash(text).matches(key)
    assert key not in text


def test_two_hashes_of_one_key_differ_by_their_salt() -> None:
    key = apikeys.new_key()
    assert str(apikeys.hash_key(key, log_n=10)) != str(apikeys.hash_key(key, log_n=10))


def test_new_keys_are_long_random_and_recognisable() -> None:
    keys = {apikeys.new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("mcpmqtt_") and len(k) >= 50 for k in keys)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mcpmqtt_a-key-not-a-hash", "not an scrypt hash"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "not an scrypt hash"),
        ("$scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "cost out of range"),
        ("$scrypt$ln=20,r=32,p=16$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "more than 256 MiB"),
        ("$scrypt$ln=15,r=8,p=1$c2Fs$aGFzaGhhc2hoYXNoaGFzaA", "too short"),
        ("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaA", "too short"),
        ("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0$a", "not valid base64"),
    ],
    ids=["plain-key", "argon2", "cost", "memory", "salt", "digest", "base64"],
)
def test_a_malformed_hash_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        apikeys.parse_hash(text)


def test_a_short_key_is_not_hashed() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        apikeys.hash_key("short")


# ---- grants ----------------------------------------------------------------------------------------------


def test_a_grant_keeps_the_permissions_the_allowlist_gives_its_patterns() -> None:
    narrowed = narrow(PLANT, [Grant(("lab/shared/#", "sensors/kitchen/temperature"))])
    assert narrowed.decide("write", "lab/shared/x").allowed
    assert narrowed.decide("read", "lab/shared/+").allowed
    assert narrowed.decide("read", "sensors/kitchen/temperature").allowed
    assert not narrowed.decide("write", "sensors/kitchen/temperature").allowed  # read-only in PLANT
    assert not narrowed.decide("write", "lab/other").allowed
    assert not narrowed.decide("write", "actuators/x").allowed
    assert not narrowed.decide("read", "sensors/hall/temperature").allowed


def test_a_read_only_grant_keeps_no_write() -> None:
    narrowed = narrow(PLANT, [Grant(None, READ)])
    assert narrowed.decide("read", "lab/x").allowed
    assert not narrowed.decide("write", "lab/x").allowed
    assert not narrowed.decide("write", "actuators/x").allowed
    assert narrowed.patterns("write") == []


def test_deny_entries_stay_in_force_in_a_narrowed_allowlist() -> None:
    narrowed = narrow(PLANT, [Grant(("lab/#",))])
    assert not narrowed.decide("write", "lab/locks/front").allowed
    assert not narrowed.readable("lab/locks/front")


def test_grants_add_up() -> None:
    narrowed = narrow(PLANT, [Grant(("lab/a/#",), READ), Grant(("lab/a/#",), WRITE), Grant(("actuators/x",))])
    assert [(r.pattern, r.permissions) for r in narrowed.rules if not r.deny] == [
        ("lab/a/#", BOTH),
        ("actuators/x", WRITE),
    ]


def test_no_grant_leaves_nothing_but_the_deny_entries() -> None:
    narrowed = narrow(PLANT, [])
    assert not narrowed.decide("read", "lab/x").allowed
    assert narrowed.decide("read", "lab/x").reason.startswith("permission denied:")


def test_a_shared_grant_needs_a_shared_pattern_of_the_same_group() -> None:
    assert grant_problems(PLANT, Grant(("$share/workers/jobs/a",))) == []
    assert grant_problems(PLANT, Grant(("$share/others/jobs/a",)))
    assert grant_problems(PLANT, Grant(("jobs/a",)))


@pytest.mark.parametrize(
    ("grant", "says"),
    [
        (Grant(("secret/#",)), "'secret/#' is not within the allowlist"),
        (Grant(("#",)), "'#' is not within the allowlist"),
        (Grant(("sensors/#",)), "'sensors/#' is not within the allowlist"),
        (Grant(("lab/locks/x",), BOTH), ""),  # within lab/#; the deny entry still applies
        (Grant(("sensors/+/temperature",), WRITE), "gives it only read; the grant keeps only write"),
    ],
)
def test_grant_problems_name_the_pattern(grant: Grant, says: str) -> None:
    texts = [text for _, text in grant_problems(PLANT, grant)]
    if not says:
        assert texts == []
        return
    assert len(texts) == 1
    assert says in texts[0]
    with pytest.raises(ValueError, match=r"not within|gives it only"):
        narrow(PLANT, [grant])


@FAST
@given(st.data(), plain_filters(), plain_filters())
def test_a_narrowed_allowlist_never_allows_more(data: st.DataObject, allowed: str, requested: str) -> None:
    """Whatever a grant within the allowlist allows, the allowlist allows too."""
    full = Allowlist([Rule(allowed, BOTH), Rule("x/#", READ)])
    grant = Grant((data.draw(st.sampled_from([allowed, requested])),))
    if grant_problems(full, grant):
        return
    narrowed = narrow(full, [grant])
    if narrowed.decide("read", requested).allowed:
        assert full.decide("read", requested).allowed
    topic = data.draw(topic_matched_by(requested))
    if narrowed.decide("write", topic).allowed:
        assert full.decide("write", topic).allowed
    if narrowed.readable(topic):
        assert full.readable(topic)


# ---- the API key verifier -------------------------------------------------------------------------------


def _key(name: str, key: str, **narrowing: Any) -> ApiKey:
    return ApiKey(name=name, hash=str(apikeys.hash_key(key, log_n=10)), **narrowing)


async def test_the_api_key_verifier_names_the_key_and_carries_its_allowlist() -> None:
    full, narrow_key = apikeys.new_key(), apikeys.new_key()
    verifier = ApiKeyVerifier([_key("full", full), _key("lab", narrow_key, topics=["lab/a/#"])], PLANT)
    token = await verifier.verify_token(full)
    assert isinstance(token, Access)
    assert (token.client_id, token.allowlist) == ("api-key:full", None)
    narrowed = await verifier.verify_token(narrow_key)
    assert isinstance(narrowed, Access) and narrowed.allowlist is not None
    assert [r.pattern for r in narrowed.allowlist.rules if not r.deny] == ["lab/a/#"]
    assert await verifier.verify_token(apikeys.new_key()) is None


async def test_a_narrowed_keys_refusal_names_the_keys_limit_not_the_server() -> None:
    key = apikeys.new_key()
    reader = _key("reader", key, topics=["sensors/+/temperature"], permissions=["read"])
    access = await ApiKeyVerifier([reader], PLANT).verify_token(key)
    assert isinstance(access, Access) and access.allowlist is not None
    refusal = access.allowlist.decide("write", "sensors/kitchen/temperature").reason
    assert refusal == (
        "permission denied: publishing to 'sensors/kitchen/temperature' needs a write pattern that "
        "matches it; the API key 'reader' is limited to reading 'sensors/+/temperature', which allows "
        "no publishing"
    )
    assert "this server" not in refusal


async def test_a_known_key_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    key = apikeys.new_key()
    verifier = ApiKeyVerifier([_key("k", key)], PLANT)
    calls = []
    original = apikeys.KeyHash.matches
    monkeypatch.setattr(apikeys.KeyHash, "matches", lambda self, k: calls.append(k) or original(self, k))
    wrong = apikeys.new_key()
    for _ in range(3):
        assert await verifier.verify_token(key) is not None
        assert await verifier.verify_token(wrong) is None
    assert calls == [key, wrong]


async def test_concurrent_requests_with_a_new_key_hash_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    key = apikeys.new_key()
    verifier = ApiKeyVerifier([_key("k", key)], PLANT)
    calls = []
    original = apikeys.KeyHash.matches
    monkeypatch.setattr(apikeys.KeyHash, "matches", lambda self, k: calls.append(k) or original(self, k))
    tokens = await asyncio.gather(*(verifier.verify_token(key) for _ in range(20)))
    assert all(isinstance(token, Access) for token in tokens)
    assert calls == [key]


# ---- the JWT verifier -----------------------------------------------------------------------------------

ISSUER = "https://auth.example.net"
RESOURCE = "https://mcp.example.net/mcp"


class Keys:
    """An RSA and an EC signing key with their JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [{**rsa_jwk, "kid": "rsa-1", "alg": "RS256"}, {**ec_jwk, "kid": "ec-1", "alg": "ES256"}]
        }

    def token(self, *, alg: str = "RS256", kid: str | None = "rsa-1", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": RESOURCE, "sub": "user-1", "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        signing = key if key is not None else (self.ec if alg.startswith("ES") else self.rsa)
        return jwt.encode(payload, signing, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _verifier(keys: Keys, tmp_path: pathlib.Path, **settings: Any) -> JwtVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    oauth = OAuthSettings(issuer=ISSUER, resource=RESOURCE, jwks_file=path, **settings)
    return JwtVerifier(oauth, PLANT)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_a_valid_token_is_accepted(keys: Keys, tmp_path: pathlib.Path, alg: str) -> None:
    verifier = _verifier(keys, tmp_path)
    token = await verifier.verify_token(
        keys.token(alg=alg, kid="ec-1" if alg == "ES256" else "rsa-1", scope="a b")
    )
    assert isinstance(token, Access)
    assert (token.subject, token.scopes, token.allowlist) == ("user-1", ["a", "b"], None)


def _forged_hs256(keys: Keys) -> str:
    """Signed with HMAC using the public key as the secret: the algorithm-confusion attack (made by hand,
    since PyJWT refuses to make one)."""
    public = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    claims = {"iss": ISSUER, "aud": RESOURCE, "exp": int(time.time()) + 300}
    signing_input = part({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.digest(public, signing_input, "sha256")).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k: k.token(exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda k: k.token(exp=None), id="no-exp"),
        pytest.param(lambda k: k.token(iss="https://evil.example.net"), id="other-issuer"),
        pytest.param(lambda k: k.token(iss=None), id="no-issuer"),
        pytest.param(lambda k: k.token(aud="https://other.example.net/mcp"), id="other-audience"),
        pytest.param(lambda k: k.token(aud=None), id="no-audience"),
        pytest.param(lambda k: k.token(nbf=int(time.time()) + 3600), id="not-yet-valid"),
        pytest.param(
            lambda k: k.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            id="other-key",
        ),
        pytest.param(lambda k: k.token(kid="unknown"), id="unknown-kid"),
        pytest.param(lambda k: k.token(kid=None), id="no-kid-two-keys"),
        pytest.param(lambda k: k.token(alg="ES256", kid="rsa-1"), id="alg-of-another-key"),
        pytest.param(lambda k: k.token(alg="RS512"), id="alg-not-accepted"),
        pytest.param(
            lambda k: jwt.encode(
                {"iss": ISSUER, "aud": RESOURCE, "exp": int(time.time()) + 60}, None, algorithm="none"
            ),
            id="alg-none",
        ),
        pytest.param(_forged_hs256, id="hs256-with-public-key"),
        pytest.param(lambda k: k.token()[:-4] + "AAAA", id="bad-signature"),
        pytest.param(lambda k: "not.a.jwt", id="garbage"),
    ],
)
async def test_an_invalid_token_is_refused(keys: Keys, tmp_path: pathlib.Path, make: Any) -> None:
    assert await _verifier(keys, tmp_path).verify_token(make(keys)) is None


async def test_an_audience_list_containing_ours_is_accepted(keys: Keys, tmp_path: pathlib.Path) -> None:
    token = keys.token(aud=["https://other.example.net", RESOURCE])
    assert await _verifier(keys, tmp_path).verify_token(token) is not None


async def test_scopes_narrow_the_allowlist(keys: Keys, tmp_path: pathlib.Path) -> None:
    scopes = {"mqtt.lab": {"topics": ["lab/#"]}, "mqtt.read": {"permissions": ["read"]}}
    verifier = _verifier(keys, tmp_path, scopes=scopes)
    lab = await verifier.verify_token(keys.token(scope="openid mqtt.lab"))
    assert isinstance(lab, Access) and lab.allowlist is not None
    assert lab.allowlist.decide("write", "lab/x").allowed
    assert not lab.allowlist.decide("write", "actuators/x").allowed
    reader = await verifier.verify_token(keys.token(scp=["mqtt.read"]))
    assert isinstance(reader, Access) and reader.allowlist is not None
    assert reader.allowlist.decide("read", "sensors/x/temperature").allowed
    assert not reader.allowlist.decide("write", "lab/x").allowed
    nothing = await verifier.verify_token(keys.token(scope="openid"))
    assert isinstance(nothing, Access) and nothing.allowlist is not None
    assert not nothing.allowlist.decide("read", "lab/x").allowed


async def test_a_scopes_refusal_names_the_scopes_limit_not_the_server(
    keys: Keys, tmp_path: pathlib.Path
) -> None:
    verifier = _verifier(keys, tmp_path, scopes={"mqtt.read": {"permissions": ["read"]}})
    reader = await verifier.verify_token(keys.token(scope="mqtt.read"))
    assert isinstance(reader, Access) and reader.allowlist is not None
    assert reader.allowlist.decide("write", "lab/x").reason.endswith(
        "; the token's scopes (mqtt.read) limit it to reading the allowlist's topics, which allows no "
        "publishing"
    )
    nothing = await verifier.verify_token(keys.token(scope="openid"))
    assert isinstance(nothing, Access) and nothing.allowlist is not None
    assert nothing.allowlist.decide("read", "lab/x").reason.endswith(
        "; the token carries none of the scopes that http.oauth.scopes grants (mqtt.read), which allows "
        "no reading"
    )


async def test_the_jwks_url_is_fetched_again_for_a_new_key_id(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = [{"keys": keys.jwks()["keys"][:1]}, keys.jwks()]
    fetched: list[str] = []

    def fetch(request: Any) -> Any:
        fetched.append(str(request.url))
        return httpx2.Response(200, json=documents[min(len(fetched) - 1, 1)])

    transport = httpx2.MockTransport(fetch)
    real_client = httpx2.AsyncClient
    monkeypatch.setattr(auth.httpx2, "AsyncClient", lambda **kw: real_client(transport=transport, **kw))
    monkeypatch.setattr(auth, "_JWKS_MIN_INTERVAL", 0.0)
    oauth = OAuthSettings(issuer=ISSUER, resource=RESOURCE, jwks_url="https://auth.example.net/jwks")
    verifier = JwtVerifier(oauth, PLANT)
    assert await verifier.verify_token(keys.token()) is not None
    assert len(fetched) == 1
    assert await verifier.verify_token(keys.token(alg="ES256", kid="ec-1")) is not None  # rotated in
    assert len(fetched) == 2
    assert await verifier.verify_token(keys.token()) is not None  # cached
    assert len(fetched) == 2


async def test_an_unknown_key_id_does_not_hammer_the_issuer(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    real_client = httpx2.AsyncClient

    def fetch(request: Any) -> Any:
        fetched.append(str(request.url))
        return httpx2.Response(200, json=keys.jwks())

    monkeypatch.setattr(
        auth.httpx2, "AsyncClient", lambda **kw: real_client(transport=httpx2.MockTransport(fetch), **kw)
    )
    oauth = OAuthSettings(issuer=ISSUER, resource=RESOURCE, jwks_url="https://auth.example.net/jwks")
    verifier = JwtVerifier(oauth, PLANT)
    for _ in range(5):
        assert await verifier.verify_token(keys.token(kid="made-up")) is None
    assert len(fetched) == 1


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"jwks_url": "https://a/jwks", "jwks_file": "x.json"}, "exactly one of jwks_url and jwks_file"),
        ({}, "exactly one of jwks_url and jwks_file"),
        ({"jwks_url": "http://auth.example.net/jwks"}, "must use https://"),
        ({"jwks_url": "https://a/jwks", "issuer": "http://auth.example.net"}, "must use https://"),
        ({"jwks_url": "https://a/jwks", "algorithms": ["HS256"]}, "algorithms"),
        ({"jwks_url": "https://a/jwks", "resource": "mcp.example.net/mcp"}, "absolute https:// URL"),
    ],
)
def test_oauth_settings_refuse_what_would_be_unsafe(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        OAuthSettings.model_validate({"issuer": ISSUER, "resource": RESOURCE, **settings})


def test_a_jwks_file_that_is_no_key_set_is_an_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": []}')
    oauth = OAuthSettings(issuer=ISSUER, resource=RESOURCE, jwks_file=path)
    with pytest.raises(ValueError, match="not a JWKS document"):
        JwtVerifier(oauth, PLANT)
    with pytest.raises(ValueError, match="cannot read the JWKS file"):
        JwtVerifier(oauth.model_copy(update={"jwks_file": tmp_path / "missing.json"}), PLANT)


async def test_a_flood_of_new_tokens_from_one_client_is_refused_unchecked_past_its_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = apikeys.new_key()
    verifier = ApiKeyVerifier([_key("k", key)], PLANT)
    checked: list[str] = []
    original = apikeys.KeyHash.matches
    monkeypatch.setattr(apikeys.KeyHash, "matches", lambda self, k: checked.append(k) or original(self, k))
    CLIENT_ADDRESS.set("192.0.2.1")
    flood = [apikeys.new_key() for _ in range(20)]
    results = await asyncio.gather(*(verifier.verify_token(token) for token in [*flood, key]))
    assert results == [None] * 21
    assert len(checked) == 10  # two checked at once, eight waiting; the rest refused at once
    assert key not in checked
    assert isinstance(await verifier.verify_token(key), Access)  # refused unchecked is not remembered
