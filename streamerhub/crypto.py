"""AES-GCM sealing of secrets (stream keys, OAuth tokens) under a master key kept outside the DB."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamerhub.errors import CryptoError

FORMAT = 1  # first byte of every sealed blob: lets the layout change later
KEY_FILE = "master.key"
RETIRED_DIR = "retired-keys"
CREDENTIAL_NAME = "master-key"  # systemd LoadCredential=master-key:/path


def aad_for(table: str, row_id: object, column: str) -> str:
    """Associated data binding a ciphertext to its row: copied into another row, it won't open."""
    return f"{table}:{row_id}:{column}"


def key_id(key: bytes) -> bytes:
    """An 8-byte fingerprint stored with each ciphertext, so rotation knows which key sealed it."""
    return hashlib.sha256(b"streamerhub-key-id" + key).digest()[:8]


def _decode_key(raw: bytes, where: Path) -> bytes:
    if len(raw) == 32:
        return raw
    try:
        key = base64.urlsafe_b64decode(raw.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise CryptoError(
            f"master key {where} is not a 32-byte key (base64 or raw): restore the "
            "right file from your backup"
        )
    return key


def read_key_file(path: Path) -> bytes:
    """Read a master key file, refusing ones that other users can read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise CryptoError(f"cannot read master key {path}: {exc.strerror}") from None
    if mode & 0o077 and not str(path).startswith(os.environ.get("CREDENTIALS_DIRECTORY", "\0")):
        raise CryptoError(
            f"master key {path} is readable by other users (mode "
            f"{oct(mode & 0o777)}): run chmod 600 {path}"
        )
    return _decode_key(raw, path)


def write_key_file(path: Path, key: bytes) -> None:
    """Write a key with mode 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.urlsafe_b64encode(key) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Keyring:
    """The current master key plus retired ones still able to open old ciphertexts."""

    current: bytes
    retired: dict[bytes, bytes] = field(default_factory=dict)
    source: str = ""

    @property
    def current_id(self) -> str:
        return key_id(self.current).hex()

    def seal(self, plaintext: str | bytes, aad: str) -> bytes:
        """Encrypt with a fresh 96-bit nonce, binding the ciphertext to its owner (aad)."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(12)
        sealed = AESGCM(self.current).encrypt(nonce, data, aad.encode())
        return bytes([FORMAT]) + key_id(self.current) + nonce + sealed

    def open(self, blob: bytes, aad: str) -> bytes:
        """Decrypt, or raise CryptoError saying why (never return garbage)."""
        if len(blob) < 1 + 8 + 12 + 16 or blob[0] != FORMAT:
            raise CryptoError(f"secret of {aad} is not a StreamerHub ciphertext")
        kid, nonce, sealed = blob[1:9], blob[9:21], blob[21:]
        key = self.current if kid == key_id(self.current) else self.retired.get(kid)
        if key is None:
            raise CryptoError(
                f"secret of {aad} was sealed with master key {kid.hex()}, but the "
                f"key in use is {self.current_id}: restore the master key this "
                "database was created with"
            )
        try:
            return AESGCM(key).decrypt(nonce, sealed, aad.encode())
        except InvalidTag:
            raise CryptoError(
                f"secret of {aad} does not open with master key {kid.hex()}: "
                "the data was altered or copied from another row"
            ) from None

    def open_str(self, blob: bytes, aad: str) -> str:
        return self.open(blob, aad).decode()

    def needs_reseal(self, blob: bytes) -> bool:
        return blob[1:9] != key_id(self.current)


def load_keyring(data_dir: Path, env: Mapping[str, str], create: bool) -> Keyring:
    """Load the master key from a systemd credential or data_dir/master.key (created if allowed)."""
    retired = _load_retired(data_dir / RETIRED_DIR)
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).is_file():
        path = Path(cred_dir) / CREDENTIAL_NAME
        return Keyring(read_key_file(path), retired, f"systemd credential {path}")
    path = data_dir / KEY_FILE
    if path.is_file():
        return Keyring(read_key_file(path), retired, str(path))
    if not create:
        raise CryptoError(
            f"master key {path} is missing but the database holds sealed secrets: "
            "restore master.key from your backup (or the systemd credential "
            f"'{CREDENTIAL_NAME}'); without it stream keys and tokens are lost"
        )
    key = AESGCM.generate_key(bit_length=256)
    write_key_file(path, key)
    return Keyring(key, retired, str(path))


def _load_retired(folder: Path) -> dict[bytes, bytes]:
    if not folder.is_dir():
        return {}
    keys = (read_key_file(p) for p in sorted(folder.glob("*.key")))
    return {key_id(k): k for k in keys}


def retire_and_replace(data_dir: Path, keyring: Keyring) -> Keyring:
    """Move the current key to retired-keys/ and write a fresh master.key; returns the new ring."""
    if keyring.source.startswith("systemd credential"):
        raise CryptoError(
            "the master key comes from a systemd credential: rotate it by "
            "replacing the credential file, not with streamerhub keys rotate"
        )
    write_key_file(data_dir / RETIRED_DIR / f"{keyring.current_id}.key", keyring.current)
    new = AESGCM.generate_key(bit_length=256)
    write_key_file(data_dir / KEY_FILE, new)
    retired = {**keyring.retired, key_id(keyring.current): keyring.current}
    return Keyring(new, retired, str(data_dir / KEY_FILE))


def forget_retired(data_dir: Path) -> int:
    """Delete retired keys once nothing is sealed with them; returns how many were removed."""
    folder = data_dir / RETIRED_DIR
    removed = 0
    for path in folder.glob("*.key") if folder.is_dir() else ():
        path.unlink()
        removed += 1
    return removed
