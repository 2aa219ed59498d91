"""Token encryption at rest: Fernet round trip, key derivation, expiry handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from upstox_bot.errors import ConfigError
from upstox_bot.upstox.errors import UpstoxAuthError
from upstox_bot.upstox.tokens import (
    MIN_KEY_CHARS,
    StoredToken,
    TokenCipher,
    TokenDecryptError,
    derive_fernet_key,
)

SECRET = "k3y-material-that-is-long-enough-for-hkdf-0123"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQjEyMyJ9.c2lnbmF0dXJl"


def test_round_trip_returns_the_token() -> None:
    cipher = TokenCipher(SecretStr(SECRET))
    ciphertext = cipher.encrypt(TOKEN)
    assert TOKEN not in ciphertext
    assert ciphertext.isascii()
    assert cipher.decrypt(ciphertext).get_secret_value() == TOKEN


def test_encryption_is_randomised() -> None:
    cipher = TokenCipher(SECRET)
    assert cipher.encrypt(TOKEN) != cipher.encrypt(TOKEN)


def test_fernet_key_is_used_as_is() -> None:
    key = Fernet.generate_key()
    assert derive_fernet_key(key.decode()) == key
    ciphertext = Fernet(key).encrypt(TOKEN.encode()).decode()
    assert TokenCipher(key.decode()).decrypt(ciphertext).get_secret_value() == TOKEN


def test_other_secret_is_derived_deterministically_with_hkdf() -> None:
    first = derive_fernet_key(SECRET)
    assert first == derive_fernet_key(SECRET)
    assert first != derive_fernet_key(SECRET + "x")
    assert first != SECRET.encode()
    Fernet(first)  # a valid Fernet key
    # a second process with the same setting reads what the first wrote
    assert TokenCipher(SECRET).decrypt(TokenCipher(SECRET).encrypt(TOKEN)).get_secret_value() == (
        TOKEN
    )


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEY"):
        TokenCipher("x" * (MIN_KEY_CHARS - 1))


def test_other_key_cannot_decrypt() -> None:
    ciphertext = TokenCipher(SECRET).encrypt(TOKEN)
    with pytest.raises(TokenDecryptError):
        TokenCipher(SECRET + "-other").decrypt(ciphertext)


def test_tampered_ciphertext_refused() -> None:
    cipher = TokenCipher(SECRET)
    ciphertext = cipher.encrypt(TOKEN)
    tampered = ciphertext[:-6] + ("A" if ciphertext[-6] != "A" else "B") + ciphertext[-5:]
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(tampered)


def test_repr_never_shows_secrets() -> None:
    cipher = TokenCipher(SECRET)
    stored = StoredToken.seal(
        cipher, SecretStr(TOKEN), expires_at=datetime(2026, 1, 6, 22, 0, tzinfo=UTC)
    )
    assert SECRET not in repr(cipher)
    assert stored.ciphertext not in repr(stored)
    assert TOKEN not in repr(stored)
    assert TOKEN not in str(cipher.decrypt(stored.ciphertext))


def test_stored_token_reveal_before_expiry_and_refuse_after() -> None:
    cipher = TokenCipher(SECRET)
    expires_at = datetime(2026, 1, 6, 22, 0, tzinfo=UTC)
    stored = StoredToken.seal(cipher, TOKEN, expires_at=expires_at, user_id="AB123")
    assert stored.reveal(cipher, now=expires_at - timedelta(seconds=1)).get_secret_value() == TOKEN
    assert stored.is_expired(expires_at)
    with pytest.raises(UpstoxAuthError, match="expired"):
        stored.reveal(cipher, now=expires_at)


def test_stored_token_needs_aware_expiry() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        StoredToken(ciphertext="x", expires_at=datetime(2026, 1, 6, 22, 0))  # noqa: DTZ001
