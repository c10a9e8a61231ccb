"""Key files on disk: `sign.key`/`sign.pub` (Ed25519) and `seal.key`/`seal.pub` (X25519) in one directory.

Each file holds one base64 line of the raw 32-byte key. Private files are created with mode 0600 and never
overwritten; a private key readable by others is refused, like ssh does.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from meshd.errors import KeyFileError

SIGN_KEY = "sign.key"
SIGN_PUB = "sign.pub"
SEAL_KEY = "seal.key"
SEAL_PUB = "seal.pub"
CAMP_ID = "camp.id"


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_new(path: Path, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _read_b64(path: Path, *, private: bool) -> bytes:
    try:
        info = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} not found (create keys with: meshd keygen --out DIR)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by other users; run: chmod 600 {path}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path} does not hold a base64 key") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path} holds {len(raw)} bytes, expected a 32-byte key")
    return raw


@dataclass(frozen=True, slots=True)
class KeyPairs:
    sign: Ed25519PrivateKey
    seal: X25519PrivateKey
    camp_id: int | None = None

    @property
    def sign_public(self) -> bytes:
        return raw_public(self.sign.public_key())

    @property
    def seal_public(self) -> bytes:
        return raw_public(self.seal.public_key())


def generate(directory: Path, camp_id: int | None = None) -> KeyPairs:
    """Create a new key directory; refuses to overwrite any existing key."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (SIGN_KEY, SEAL_KEY):
        if (directory / name).exists():
            raise KeyFileError(f"{directory / name} already exists; refusing to overwrite a key")
    keys = KeyPairs(Ed25519PrivateKey.generate(), X25519PrivateKey.generate(), camp_id)
    enc = base64.b64encode
    _write_new(directory / SIGN_KEY, enc(_raw_private(keys.sign)).decode() + "\n", 0o600)
    _write_new(directory / SEAL_KEY, enc(_raw_private(keys.seal)).decode() + "\n", 0o600)
    for name, raw in ((SIGN_PUB, keys.sign_public), (SEAL_PUB, keys.seal_public)):
        path = directory / name
        path.write_text(enc(raw).decode() + "\n")
        path.chmod(0o644)
    if camp_id is not None:
        (directory / CAMP_ID).write_text(f"{camp_id}\n")
    return keys


def load(directory: Path) -> KeyPairs:
    sign = Ed25519PrivateKey.from_private_bytes(_read_b64(directory / SIGN_KEY, private=True))
    seal = X25519PrivateKey.from_private_bytes(_read_b64(directory / SEAL_KEY, private=True))
    camp_id = None
    camp_path = directory / CAMP_ID
    if camp_path.exists():
        text = camp_path.read_text().strip()
        if not text.isdigit():
            raise KeyFileError(f"{camp_path} must hold a camp id number")
        camp_id = int(text)
    return KeyPairs(sign, seal, camp_id)


def load_sign_public(path: Path) -> bytes:
    """A raw public key from a `.pub` file (or a key directory, taking its sign.pub)."""
    if path.is_dir():
        path = path / SIGN_PUB
    return _read_b64(path, private=False)


def load_seal_private(directory: Path) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_read_b64(directory / SEAL_KEY, private=True))


def load_seal_public(path: Path) -> bytes:
    """A raw X25519 public key from a `.pub` file (or a key directory, taking its seal.pub)."""
    if path.is_dir():
        path = path / SEAL_PUB
    return _read_b64(path, private=False)
