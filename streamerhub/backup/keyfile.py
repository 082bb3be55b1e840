"""The master key exported under a passphrase, for keeping it with (or near) the backups.

scrypt stretches the passphrase (about 0.1 s and 32 MiB per try, so guessing it offline is
slow) and AES-256-GCM seals the key with it: a wrong passphrase or a changed byte is an error,
never a wrong key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from streamerhub.backup.tools import BackupError

MAGIC = b"streamerhub-master-key-1\n"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSPHRASE = 12


def _stretch(passphrase: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode())


def seal_master_key(key: bytes, passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(
            f"the passphrase is too short ({len(passphrase)} characters): use at least "
            f"{MIN_PASSPHRASE}, e.g. four random words"
        )
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_stretch(passphrase, salt)).encrypt(nonce, key, MAGIC)
    return MAGIC + salt + nonce + sealed


def is_sealed_export(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def open_master_key(path: Path, passphrase: str) -> bytes:
    blob = path.read_bytes()
    body = blob[len(MAGIC) :]
    salt, nonce, sealed = body[:16], body[16:28], body[28:]
    try:
        return AESGCM(_stretch(passphrase, salt)).decrypt(nonce, sealed, MAGIC)
    except InvalidTag:
        raise BackupError(
            f"{path} does not open with this passphrase (wrong passphrase, or the file changed)"
        ) from None


def write_sealed_export(path: Path, key: bytes, passphrase: str) -> None:
    """Write the export with mode 0600 from its first byte."""
    blob = seal_master_key(key, passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
