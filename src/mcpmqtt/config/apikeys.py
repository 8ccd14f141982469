"""API keys for the HTTP transports: made at random, stored only as scrypt hashes, checked in constant time.

A config file holds the hash of each key, never the key, so a leaked config does not let anyone in.
The hash is a PHC string, the format password-hashing libraries share:

    $scrypt$ln=15,r=8,p=1$<salt, base64>$<hash, base64>

scrypt comes with Python's standard library (no native dependency), and its cost is in the string, so
keys hashed today keep working if the default cost rises later. The default (2^15 x 8 blocks, 32 MiB,
about 0.1 s) is what slows an attacker with a stolen config; the keys this module makes carry 256
random bits, which no cost setting is needed to protect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "mcpmqtt_"
MIN_KEY_LENGTH = 16
DEFAULT_LOG_N = 15
DEFAULT_R = 8
DEFAULT_P = 1
_HASH_BYTES = 32
_SALT_BYTES = 16
# Bounds that keep one check under 256 MiB and a few seconds: a config is trusted, but a typo
# (ln=51) must be an error at load time, not a server that runs out of memory at the first request.
_MAX_MEMORY = 256 * 1024 * 1024
_PHC = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


@dataclass(frozen=True)
class KeyHash:
    """A parsed scrypt hash: the cost parameters, the salt and the expected digest."""

    log_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, key: str) -> bool:
        """Whether `key` hashes to this digest; the comparison takes the same time wherever they differ."""
        return hmac.compare_digest(
            _scrypt(key, self.salt, self.log_n, self.r, self.p, len(self.digest)), self.digest
        )

    def __str__(self) -> str:
        return f"$scrypt$ln={self.log_n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"


def new_key() -> str:
    """A fresh API key: the prefix (so that a leaked key is recognisable) and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, *, log_n: int = DEFAULT_LOG_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> KeyHash:
    """The hash to store for `key`, with a new random salt."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"an API key must have at least {MIN_KEY_LENGTH} characters; use a random one")
    _check_cost(log_n, r, p)
    salt = secrets.token_bytes(_SALT_BYTES)
    return KeyHash(log_n, r, p, salt, _scrypt(key, salt, log_n, r, p, _HASH_BYTES))


def parse_hash(text: str) -> KeyHash:
    """Read a stored hash; ValueError says what is wrong with it (never echoing it whole)."""
    match = _PHC.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            "not an scrypt hash of the form $scrypt$ln=15,r=8,p=1$<salt>$<hash>; "
            "make one with `mcpmqtt hash-key` (store the hash, never the key)"
        )
    log_n, r, p = (int(match[i]) for i in (1, 2, 3))
    _check_cost(log_n, r, p)
    try:
        salt, digest = _unb64(match[4]), _unb64(match[5])
    except binascii.Error:
        raise ValueError("the salt or the hash is not valid base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the salt (at least 8 bytes) or the hash (at least 16 bytes) is too short")
    return KeyHash(log_n, r, p, salt, digest)


def _check_cost(log_n: int, r: int, p: int) -> None:
    if not (10 <= log_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt cost out of range: ln must be 10 to 20, r 1 to 32, p 1 to 16")
    if _memory(log_n, r, p) > _MAX_MEMORY:
        raise ValueError("scrypt cost too high: one check would need more than 256 MiB")


def _memory(log_n: int, r: int, p: int) -> int:
    return 128 * r * ((1 << log_n) + p + 2)


def _scrypt(key: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        key.encode(), salt=salt, n=1 << log_n, r=r, p=p, dklen=length, maxmem=_memory(log_n, r, p) + (1 << 20)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
