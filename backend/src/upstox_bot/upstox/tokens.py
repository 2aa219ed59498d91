"""Encryption at rest for Upstox access tokens.

The key comes from the ``TOKEN_ENCRYPTION_KEY`` setting. A Fernet key (32 random bytes, url-safe
base64, e.g. from ``Fernet.generate_key()``) is used as is; any other text of at least
:data:`MIN_KEY_CHARS` characters is stretched to a Fernet key with HKDF-SHA256 (a fixed salt and
info string, so the same text always gives the same key). HKDF is not a password hash: the text
must be a random secret, not a memorable password.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from upstox_bot.errors import ConfigError
from upstox_bot.upstox.errors import UpstoxAuthError

MIN_KEY_CHARS = 32
_HKDF_SALT = b"upstox-bot/token-cipher/v1"
_HKDF_INFO = b"upstox access token encryption"


def _fernet_key_bytes(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return text.encode("ascii") if len(raw) == 32 else None


def derive_fernet_key(secret: str) -> bytes:
    """The Fernet key for a setting value: itself if it is one, else HKDF-SHA256 of it.

    Raises:
        ConfigError: the value is empty or shorter than :data:`MIN_KEY_CHARS` characters.
    """
    direct = _fernet_key_bytes(secret.strip())
    if direct is not None:
        return direct
    if len(secret) < MIN_KEY_CHARS:
        raise ConfigError(
            f"TOKEN_ENCRYPTION_KEY must be a Fernet key or a random secret of at least "
            f"{MIN_KEY_CHARS} characters"
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


class TokenDecryptError(UpstoxAuthError):
    """A stored token cannot be decrypted (other key, or tampered): log in again."""


class TokenCipher:
    """Encrypts and decrypts access tokens with Fernet (AES-128-CBC + HMAC-SHA256, timestamped).

    Args:
        key: ``TOKEN_ENCRYPTION_KEY``: a Fernet key or a random secret (see the module doc).
    """

    def __init__(self, key: SecretStr | str) -> None:
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._fernet = Fernet(derive_fernet_key(secret))

    def __repr__(self) -> str:
        return "TokenCipher(key=**********)"

    def encrypt(self, token: SecretStr | str) -> str:
        """The ciphertext of a token, as ASCII text fit for a database column."""
        plain = token.get_secret_value() if isinstance(token, SecretStr) else token
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> SecretStr:
        """The token inside a ciphertext made by :meth:`encrypt` with the same key.

        Raises:
            TokenDecryptError: wrong key or altered ciphertext.
        """
        try:
            plain = self._fernet.decrypt(ciphertext.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise TokenDecryptError("stored Upstox token cannot be decrypted") from exc
        return SecretStr(plain.decode("utf-8"))


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredToken:
    """An encrypted access token with its expiry, as kept in the store. Never holds plain text."""

    ciphertext: str = field(repr=False)
    expires_at: datetime  # aware; 03:30 IST after issue (API.md 1.2)
    user_id: str = ""

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("StoredToken.expires_at must be timezone-aware")

    @classmethod
    def seal(
        cls, cipher: TokenCipher, token: SecretStr | str, *, expires_at: datetime, user_id: str = ""
    ) -> StoredToken:
        """Encrypt ``token`` for storage."""
        return cls(ciphertext=cipher.encrypt(token), expires_at=expires_at, user_id=user_id)

    def is_expired(self, now: datetime) -> bool:
        """True from ``expires_at`` on (``now`` must be aware)."""
        return now >= self.expires_at

    def reveal(self, cipher: TokenCipher, *, now: datetime) -> SecretStr:
        """The plain token, for the Authorization header.

        Raises:
            UpstoxAuthError: the token has expired (log in again).
            TokenDecryptError: it cannot be decrypted with this key.
        """
        if self.is_expired(now):
            raise UpstoxAuthError(f"Upstox access token expired at {self.expires_at.isoformat()}")
        return cipher.decrypt(self.ciphertext)
