"""Attacks on the update path, each against a real repository over local HTTP.

The repository is made and signed by the release tool; the attacker's moves
are edits of the served files (a compromised server or CDN) or responses
that the test server sends instead (a man in the middle). Every attack must
end with the phone still on 1.0.0, nothing unpacked, and a reason shown.
TUF (python-tuf's ngclient) decides; these tests show it is wired so that it
can.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from appliance.update.artifact import build_artifact
from appliance.update.machine import Phase
from appliance.update.repository import Keys, StaticRepository, utc_now
from tests.update.helpers import make_wheel
from tests.update.server import endless


async def attempt(phone):
    """The phone checks and, if it can, updates; return its updater."""
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    return updater


def assert_refused(phone, updater, *words: str) -> None:
    state = updater.machine.state
    assert state.phase is Phase.IDLE, state
    assert state.reason.startswith("refused:"), state.reason
    for word in words:
        assert word in state.reason, state.reason
    assert phone.releases.current == "1.0.0"
    assert phone.releases.installed() == ["1.0.0"]
    assert phone.restarts == 0


def stored(repo: Path, pattern: str) -> Path:
    (path,) = (repo / "targets").glob(pattern)
    return path


def resign(md: Metadata, key_file: Path) -> bytes:
    """Sign ``md`` with one key file (the attacker's or a retired one)."""
    md.signatures.clear()
    md.sign(CryptoSigner(load_pem_private_key(key_file.read_bytes(), None)))
    return md.to_bytes()


async def test_a_tampered_target_is_refused_and_never_unpacked(phone, publisher):
    artifact = stored(publisher.repo, "releases/1.1.0/*.tar.gz")
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte changed
    artifact.write_bytes(bytes(data))
    updater = await attempt(phone)
    assert_refused(phone, updater, "LengthOrHashMismatchError")
    downloads = phone.state_dir / "downloads"
    assert not list(downloads.glob("appliance-1.1.0*"))


async def test_a_substituted_target_never_runs(phone, publisher):
    artifact = stored(publisher.repo, "releases/1.1.0/*.tar.gz")
    marker = phone.root / "pwned"
    evil = make_wheel(
        phone.root.parent / "evil",
        "1.1.0",
        body=f"open({str(marker)!r}, 'w').close()\n",
    )
    artifact.write_bytes(evil.read_bytes())  # same name, other content
    updater = await attempt(phone)
    state = updater.machine.state
    assert state.phase is Phase.IDLE
    assert "DownloadLengthMismatchError" in state.reason
    assert phone.releases.installed() == ["1.0.0"]
    assert not marker.exists()


async def test_tampered_targets_metadata_is_refused(phone, publisher):
    path = publisher.repo / "metadata/2.targets.json"
    doc = json.loads(path.read_text())
    info = doc["signed"]["targets"]["releases/1.1.0/appliance-1.1.0-any.tar.gz"]
    info["length"] += 1
    path.write_text(json.dumps(doc))
    updater = await attempt(phone)
    assert_refused(phone, updater)


async def test_unsigned_timestamp_is_refused(phone, publisher):
    path = publisher.repo / "metadata/timestamp.json"
    doc = json.loads(path.read_text())
    doc["signatures"] = []
    path.write_text(json.dumps(doc))
    updater = await attempt(phone)
    assert_refused(phone, updater, "UnsignedMetadataError")


async def test_metadata_signed_by_a_stranger_is_refused(phone, publisher, tmp_path):
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    path = publisher.repo / "metadata/timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 1
    path.write_bytes(resign(md, stranger))
    updater = await attempt(phone)
    assert_refused(phone, updater, "UnsignedMetadataError")


async def test_rollback_to_older_metadata_is_refused(phone, publisher):
    # The phone sees timestamp v3; the server then serves the older v2 again.
    old = (publisher.repo / "metadata/timestamp.json").read_bytes()
    publisher.timestamp()
    assert phone.source().latest() is not None  # a check: v3 is now trusted
    (publisher.repo / "metadata/timestamp.json").write_bytes(old)
    updater = await attempt(phone)
    assert_refused(phone, updater, "BadVersionNumberError")


async def test_rollback_to_an_older_release_is_refused(phone, publisher, server):
    # A validly signed repository whose channel points back at an older
    # release (a compromised publisher): TUF accepts the metadata, the
    # machine refuses the version.
    repo = StaticRepository(publisher.repo, Keys(publisher.keys, None))
    old = make_wheel(publisher.base / "old", "0.9.0")
    artifact = build_artifact(
        [old], publisher.base / "old", complete=False, platform="any"
    )
    pointer = publisher.base / "old" / "latest.json"
    custom = {"version": "0.9.0", "platform": "any"}
    pointer.write_text(json.dumps({**custom, "target": artifact.target_path}))
    repo.add_targets(
        {
            artifact.target_path: (
                artifact.path,
                {**custom, "manifest": artifact.manifest},
            ),
            "channels/any/latest.json": (pointer, custom),
        },
        utc_now(),
    )
    updater = await attempt(phone)
    assert updater.machine.state.phase is Phase.IDLE
    assert phone.releases.current == "1.0.0"
    assert not [p for p in server.requests if "0.9.0" in p]


async def test_a_frozen_repository_is_refused(phone, publisher):
    # The timestamp expired (the cron job stopped, or an attacker replays a
    # stale but once-valid repository).
    repo = StaticRepository(publisher.repo, Keys(publisher.keys, None))
    repo.timestamp(utc_now() - timedelta(days=2))
    updater = await attempt(phone)
    assert_refused(phone, updater, "ExpiredMetadataError")


async def test_mix_and_match_is_refused(phone, publisher):
    # Snapshot says targets v3; the server sends the (validly signed) v2.
    publisher.add("1.2.0")
    meta = publisher.repo / "metadata"
    (meta / "3.targets.json").write_bytes((meta / "2.targets.json").read_bytes())
    updater = await attempt(phone)
    assert_refused(phone, updater, "Expected targets v3, got v2")


async def test_endless_metadata_stops_at_the_limit(phone, server):
    server.overrides["/metadata/timestamp.json"] = endless
    updater = await attempt(phone)
    state = updater.machine.state
    assert state.phase is Phase.IDLE
    assert "DownloadLengthMismatchError" in state.reason
    assert phone.releases.current == "1.0.0"


async def test_an_endless_target_stops_at_its_signed_length(phone, publisher, server):
    artifact = stored(publisher.repo, "releases/1.1.0/*.tar.gz")
    server.overrides[f"/targets/releases/1.1.0/{artifact.name}"] = endless
    updater = await attempt(phone)
    state = updater.machine.state
    assert state.phase is Phase.IDLE
    assert "more than the" in state.reason
    assert phone.releases.installed() == ["1.0.0"]
    spool = phone.state_dir / "downloads" / ".spool"
    assert not list(spool.iterdir())  # the spool file is gone


async def test_a_targets_key_rotation_is_followed(phone, publisher):
    # First the phone learns the current repository.
    phone.source().latest()
    publisher.rotate("targets")
    publisher.add("1.2.0")
    updater = await attempt(phone)
    assert updater.machine.state.phase is Phase.RESTARTING
    assert phone.releases.current == "1.2.0"
    roots = phone.state_dir / "tuf" / "root_history"
    assert (roots / "2.root.json").exists()


async def test_the_old_targets_key_is_refused_after_rotation(phone, publisher):
    phone.source().latest()
    publisher.rotate("targets")
    (retired,) = publisher.keys.glob("targets-*.pem.retired")
    # The thief of the old key signs a targets that snapshot and timestamp
    # (still honest) then publish.
    publisher.add("1.2.0")
    meta = publisher.repo / "metadata"
    newest = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    md = Metadata.from_bytes((meta / f"{newest}.targets.json").read_bytes())
    forged = resign(md, retired)
    (meta / f"{newest}.targets.json").write_bytes(forged)
    (meta / "targets.json").write_bytes(forged)
    updater = await attempt(phone)
    assert_refused(phone, updater, "UnsignedMetadataError")


async def test_a_compromised_timestamp_key_is_useless_after_rotation(phone, publisher):
    phone.source().latest()
    publisher.rotate("timestamp")
    (retired,) = publisher.keys.glob("timestamp-*.pem.retired")
    path = publisher.repo / "metadata/timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 10  # the thief's timestamp would win on version
    path.write_bytes(resign(md, retired))
    updater = await attempt(phone)
    assert_refused(phone, updater, "UnsignedMetadataError")
    assert (phone.state_dir / "tuf/root_history/2.root.json").exists()


async def test_anti_rollback_state_survives_a_restart(phone, publisher):
    phone.source().latest()
    seen = Metadata.from_bytes((phone.state_dir / "tuf/timestamp.json").read_bytes())
    old = (publisher.repo / "metadata/timestamp.json").read_bytes()
    publisher.timestamp()
    phone.source().latest()  # a new ReleaseSource: as after a reboot
    (publisher.repo / "metadata/timestamp.json").write_bytes(old)
    updater = await attempt(phone)  # yet another process
    assert_refused(phone, updater, "BadVersionNumberError")
    assert seen.signed.version == 2
