"""RabbitMQ password hashes: base64(4-byte salt + H(salt + UTF-8 password)), H per hashing_algorithm.

Knowing the scheme lets topo tell whether a declared password still matches the stored hash without
ever sending it, and send a locally computed hash instead of the plaintext when it must change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field

ALGORITHMS = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
DEFAULT_ALGORITHM = "rabbit_password_hashing_sha256"


def hash_password(plaintext: str, algorithm: str = DEFAULT_ALGORITHM, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = ALGORITHMS[algorithm](salt + plaintext.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def hash_problem(password_hash: str, algorithm: str) -> str | None:
    """Why `password_hash` cannot be a RabbitMQ hash for `algorithm`, or None."""
    if password_hash == "":
        return None  # a user without a password (certificate or external authentication)
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64 (a placeholder? export the real hash, or use password: ${VARIABLE})"
    expected = 4 + ALGORITHMS[algorithm]().digest_size
    if len(raw) != expected:
        return f"decodes to {len(raw)} bytes; a {algorithm} hash has {expected} (4 salt + digest)"
    return None


def matches(plaintext: str, password_hash: str, algorithm: str) -> bool:
    if algorithm not in ALGORITHMS or hash_problem(password_hash, algorithm) or password_hash == "":
        return False
    raw = base64.b64decode(password_hash)
    return hmac.compare_digest(hash_password(plaintext, algorithm, raw[:4]), password_hash)


@dataclass(frozen=True, slots=True)
class Password:
    """A user's password as either side knows it: a stored hash, or (from the files) a plaintext."""

    password_hash: str = field(repr=False)
    algorithm: str = DEFAULT_ALGORITHM
    plaintext: str | None = field(default=None, repr=False)
    # The file named the algorithm: a hash made with another one is drift (else any algorithm will do).
    algorithm_pinned: bool = False

    def __repr__(self) -> str:
        return "Password(***)"

    def same_as(self, other: Password) -> bool:
        if self.plaintext is not None and other.plaintext is None:
            return other.same_as(self)
        if other.plaintext is not None and self.plaintext is None:
            if other.algorithm_pinned and other.algorithm != self.algorithm:
                return False
            return matches(other.plaintext, self.password_hash, self.algorithm)
        if self.plaintext is not None:
            return self.plaintext == other.plaintext
        if self.password_hash == "" == other.password_hash:
            return True  # no password either way: the algorithm hashes nothing
        return self.password_hash == other.password_hash and self.algorithm == other.algorithm

    def to_broker(self) -> tuple[str, str]:
        """(password_hash, hashing_algorithm) to send: computed here, so no plaintext travels."""
        if self.plaintext is not None:
            return hash_password(self.plaintext, self.algorithm), self.algorithm
        return self.password_hash, self.algorithm
