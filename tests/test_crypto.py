"""Secrets: AES-GCM sealing bound to the owning row, master key file, wrong keys, rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from streamerhub.crypto import KEY_FILE, aad_for, load_keyring, write_key_file
from streamerhub.db import Database
from streamerhub.errors import CryptoError
from streamerhub.keys import rotate_master_key


def test_master_key_created_0600_and_reused(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path, {}, create=True)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = load_keyring(tmp_path, {}, create=False)
    assert again.current == ring.current


def test_seal_is_randomised_and_opens(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path, {}, create=True)
    aad = aad_for("rtmp_targets", 7, "stream_key_sealed")
    a, b = ring.seal("live_123_abc", aad), ring.seal("live_123_abc", aad)
    assert a != b and b"live_123" not in a
    assert ring.open_str(a, aad) == "live_123_abc"


def test_ciphertext_bound_to_its_row(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path, {}, create=True)
    blob = ring.seal("secret", aad_for("t", 1, "c_sealed"))
    with pytest.raises(CryptoError, match="altered or copied"):
        ring.open(blob, aad_for("t", 2, "c_sealed"))


def test_wrong_master_key_is_a_clear_error(tmp_path: Path) -> None:
    blob = load_keyring(tmp_path / "a", {}, create=True).seal("x", "t:1:c")
    other = load_keyring(tmp_path / "b", {}, create=True)
    with pytest.raises(CryptoError, match="sealed with master key .* restore"):
        other.open(blob, "t:1:c")


def test_missing_key_with_sealed_data_refuses(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="missing.*restore master.key"):
        load_keyring(tmp_path, {}, create=False)


def test_world_readable_key_refused(tmp_path: Path) -> None:
    load_keyring(tmp_path, {}, create=True)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_keyring(tmp_path, {}, create=False)


def test_systemd_credential_preferred(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    write_key_file(creds / "master-key", b"k" * 32)
    ring = load_keyring(tmp_path / "data", {"CREDENTIALS_DIRECTORY": str(creds)}, create=True)
    assert ring.current == b"k" * 32 and "systemd credential" in ring.source
    assert not (tmp_path / "data" / KEY_FILE).exists()


async def test_rotation_reseals_every_secret(tmp_path: Path, db: Database) -> None:
    ring = load_keyring(tmp_path, {}, create=True)
    aad = aad_for("twitch_channels", "1000", "access_token_sealed")
    async with db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO twitch_channels (channel_id, login, display_name, access_token_sealed)"
            " VALUES ('1000', 'streamer', 'Streamer', $1)",
            ring.seal("tok-abcdef", aad),
        )
    new, count = await rotate_master_key(db, tmp_path, ring)
    assert count == 1 and new.current != ring.current
    blob = await db.pool.fetchval("SELECT access_token_sealed FROM twitch_channels")
    assert new.open_str(blob, aad) == "tok-abcdef"
    with pytest.raises(CryptoError):
        ring.open(blob, aad)  # the old key no longer opens anything
    assert not list((tmp_path / "retired-keys").glob("*.key"))
    assert load_keyring(tmp_path, {}, create=False).current == new.current
