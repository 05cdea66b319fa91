"""The repository side of remote updates: a TUF repository as plain static files.

Why TUF (The Update Framework, python-tuf): a phone that trusts "whatever the
update server sends, if the hash matches" can be given an old vulnerable
release (rollback), be kept from ever seeing a fix (freeze), or be fed a mix
of files from different releases (mix-and-match) by anyone who controls the
server or the network. TUF's four roles close those holes, and its metadata
is checked by python-tuf's ngclient on the phone, not by code of ours:

* ``root`` (offline; its keys live in their own directory, away from the
  publishing machine) names the keys and thresholds of every role;
* ``targets`` lists each release artifact with its length and hashes;
* ``snapshot`` pins the version of ``targets`` (no mix-and-match);
* ``timestamp`` pins the snapshot and expires within a day (no freeze); it is
  re-signed by a cron job, the only key that must stay online.

The repository is files under one directory, served by any web server or
CDN: ``metadata/`` (``N.root.json``, ``N.targets.json``, ``N.snapshot.json``,
``timestamp.json``) and ``targets/``. Consistent snapshots are on: every file
a client fetches, except ``timestamp.json``, has a name that never changes
content (version- or hash-prefixed, TUF specification §5.6 and §6.2), so a
publish in progress or a stale CDN edge never shows a client a half-updated
repository.

Keys are Ed25519 (securesystemslib's ``CryptoSigner``), one PKCS#8 PEM file per
key, mode 0600. A role with threshold *t* gets *t* keys; signing uses every key
of the role present in the key directories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from appliance.errors import ConfigError, UpdateError
from appliance.files import write_atomic

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "ROLES",
    "Keys",
    "RepositoryPolicy",
    "StaticRepository",
]

ROLES = ("root", "targets", "snapshot", "timestamp")

#: How long each role's metadata stays valid. The timestamp is short so that a
#: phone notices within a day when someone withholds new releases (freeze).
DEFAULT_EXPIRY_DAYS: Mapping[str, int] = {
    "root": 365,
    "targets": 90,
    "snapshot": 30,
    "timestamp": 1,
}


@dataclass(frozen=True)
class RepositoryPolicy:
    """Thresholds (keys per role) and lifetimes of a new repository."""

    thresholds: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(ROLES, 1)
    )
    expiry_days: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS)
    )

    def __post_init__(self) -> None:
        for role in ROLES:
            if self.thresholds.get(role, 1) < 1:
                raise ConfigError(f"threshold.{role}", "must be at least 1")
            if self.expiry_days.get(role, 1) < 1:
                raise ConfigError(f"expiry.{role}", "must be at least 1 day")


class Keys:
    """Private keys in two directories: online roles, and the offline root.

    Each key is ``<role>-<n>.pem``; files are created with mode 0600 and never
    overwritten (a key is generated once).
    """

    def __init__(self, key_dir: Path, root_key_dir: Path | None) -> None:
        self.key_dir = key_dir
        self.root_key_dir = root_key_dir

    def _dir(self, role: str) -> Path:
        if role == "root":
            if self.root_key_dir is None:
                raise ConfigError("--root-keys", "the root keys are needed for this")
            return self.root_key_dir
        return self.key_dir

    def generate(self, role: str, count: int) -> list[CryptoSigner]:
        """Make ``count`` new keys for ``role``; return their signers."""
        directory = self._dir(role)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        taken = {p.name for p in directory.glob(f"{role}-*.pem")}
        signers: list[CryptoSigner] = []
        n = 0
        while len(signers) < count:
            n += 1
            path = directory / f"{role}-{n}.pem"
            if path.name in taken:
                continue
            signer = CryptoSigner.generate_ed25519()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(signer.private_bytes)
            signers.append(signer)
        return signers

    def signers(self, role: str) -> list[CryptoSigner]:
        """Every key of ``role`` present on this machine."""
        found = []
        for path in sorted(self._dir(role).glob(f"{role}-*.pem")):
            key = load_pem_private_key(path.read_bytes(), None)
            if not isinstance(key, Ed25519PrivateKey):
                raise UpdateError(f"{path}: not an Ed25519 key")
            found.append(CryptoSigner(key))
        return found

    def retire(self, role: str, keyids: set[str]) -> None:
        """Rename the files of replaced keys to ``*.pem.retired`` (kept, unused)."""
        for path in sorted(self._dir(role).glob(f"{role}-*.pem")):
            key = load_pem_private_key(path.read_bytes(), None)
            if not isinstance(key, Ed25519PrivateKey):
                continue
            if CryptoSigner(key).public_key.keyid in keyids:
                path.rename(path.with_name(path.name + ".retired"))


def _write_atomic(path: Path, data: bytes | Path) -> None:
    """Publish ``data`` at ``path`` (world-readable: a web server serves it)."""
    write_atomic(path, data, mode=0o644)


class StaticRepository:
    """A TUF repository in ``repo_dir``, signed with keys from ``keys``.

    ``now`` (aware UTC datetime) is passed in by the caller so that expiry is
    decided by the caller's clock, and tests can publish expired metadata.
    """

    def __init__(self, repo_dir: Path, keys: Keys) -> None:
        self.repo_dir = repo_dir
        self.keys = keys
        self.metadata_dir = repo_dir / "metadata"
        self.targets_dir = repo_dir / "targets"

    # ------------------------------------------------------------ storage

    def _load(self, role: str) -> Metadata[Any]:
        path = self.metadata_dir / f"{role}.json"
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise UpdateError(
                f"{self.repo_dir}: not a repository (no {path.name})"
            ) from None

    def _expiry_days(self) -> dict[str, int]:
        stored = self.metadata_dir / "policy.json"
        if stored.exists():
            days: dict[str, int] = json.loads(stored.read_text())["expiry_days"]
            return days
        return dict(DEFAULT_EXPIRY_DAYS)

    def _sign_and_store(self, md: Metadata[Any], now: datetime) -> bytes:
        role = md.signed.type
        signed: Signed = md.signed
        signed.expires = now + timedelta(days=self._expiry_days()[role])
        signers = self.keys.signers(role)
        if not signers:
            raise UpdateError(f"no {role} key found")
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        data = md.to_bytes()
        if role == "timestamp":
            _write_atomic(self.metadata_dir / "timestamp.json", data)
        else:
            # Consistent snapshots: clients fetch N.role.json (TUF §5.6);
            # the unversioned copy is this tool's own working copy.
            _write_atomic(self.metadata_dir / f"{signed.version}.{role}.json", data)
            _write_atomic(self.metadata_dir / f"{role}.json", data)
        return data

    # ----------------------------------------------------------- commands

    @classmethod
    def init(
        cls,
        repo_dir: Path,
        keys: Keys,
        policy: RepositoryPolicy,
        now: datetime,
    ) -> StaticRepository:
        """Create the keys and the first signed metadata of every role."""
        if (repo_dir / "metadata" / "root.json").exists():
            raise UpdateError(f"{repo_dir}: a repository exists already")
        repo = cls(repo_dir, keys)
        repo.metadata_dir.mkdir(parents=True, exist_ok=True)
        repo.targets_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            repo.metadata_dir / "policy.json",
            json.dumps({"expiry_days": dict(policy.expiry_days)}).encode(),
        )
        root = Root(consistent_snapshot=True)
        for role in ROLES:
            threshold = policy.thresholds.get(role, 1)
            root.roles[role] = Role([], threshold)
            for signer in keys.generate(role, threshold):
                root.add_key(signer.public_key, role)
        repo._sign_and_store(Metadata(root), now)
        repo._sign_and_store(Metadata(Targets()), now)
        snapshot = Snapshot()
        snapshot.meta["targets.json"] = MetaFile(version=1)
        repo._sign_and_store(Metadata(snapshot), now)
        timestamp = Timestamp()
        timestamp.snapshot_meta = MetaFile(version=1)
        repo._sign_and_store(Metadata(timestamp), now)
        return repo

    def root_bytes(self) -> bytes:
        """The current root metadata: what a phone is built with to trust."""
        return (self.metadata_dir / "root.json").read_bytes()

    def targets(self) -> Targets:
        """The signed part of the current targets metadata."""
        signed = self._load("targets").signed
        assert isinstance(signed, Targets)
        return signed

    def add_targets(self, files: Mapping[str, tuple[Path, Any]], now: datetime) -> None:
        """Publish files: ``{target path: (local file, custom data)}``.

        Copies each file to ``targets/<dir>/<sha256>.<name>`` (the name a
        client with consistent snapshots asks for), then signs a new
        ``targets``, ``snapshot`` and ``timestamp`` in that order, so that a
        client never sees metadata that names a file not yet there.
        """
        md = self._load("targets")
        targets = md.signed
        assert isinstance(targets, Targets)
        for path, (local, custom) in files.items():
            info = TargetFile.from_file(path, str(local), ["sha256"])
            if custom is not None:
                info.unrecognized_fields["custom"] = custom
            digest = info.hashes["sha256"]
            directory, _, name = path.rpartition("/")
            dest = self.targets_dir / directory / f"{digest}.{name}"
            _write_atomic(dest, local)
            targets.targets[path] = info
        targets.version += 1
        self._sign_and_store(md, now)
        self._publish_snapshot(now)

    def _publish_snapshot(self, now: datetime) -> None:
        md = self._load("snapshot")
        snapshot = md.signed
        assert isinstance(snapshot, Snapshot)
        snapshot.meta["targets.json"] = MetaFile(version=self.targets().version)
        snapshot.version += 1
        self._sign_and_store(md, now)
        self.timestamp(now)

    def timestamp(self, now: datetime) -> None:
        """Sign a new timestamp for the current snapshot (the cron job's step)."""
        snapshot = self._load("snapshot").signed
        md = self._load("timestamp")
        timestamp = md.signed
        assert isinstance(timestamp, Timestamp)
        timestamp.snapshot_meta = MetaFile(version=snapshot.version)
        timestamp.version += 1
        self._sign_and_store(md, now)

    def rotate(self, role: str, now: datetime) -> None:
        """Replace every key of an online role: new keys, a new root.

        The root (signed with the offline root keys) names the new keys; the
        role's metadata is re-signed with them, and so is everything that
        depends on it. Phones follow the chain of roots (TUF §5.3) and reject
        anything signed with the old keys from then on.
        """
        if role == "root" or role not in ROLES:
            raise ConfigError("--role", f"must be one of {', '.join(ROLES[1:])}")
        root_md = self._load("root")
        root = root_md.signed
        assert isinstance(root, Root)
        old = set(root.roles[role].keyids)
        for keyid in sorted(old):
            root.revoke_key(keyid, role)
        for signer in self.keys.generate(role, root.roles[role].threshold):
            root.add_key(signer.public_key, role)
        self.keys.retire(role, old)
        root.version += 1
        self._sign_and_store(root_md, now)
        # Re-sign the rotated role and the ones after it with the new keys.
        if role == "targets":
            md = self._load("targets")
            md.signed.version += 1
            self._sign_and_store(md, now)
        if role in ("targets", "snapshot"):
            self._publish_snapshot(now)
        else:
            self.timestamp(now)


def utc_now() -> datetime:
    """The wall clock as an aware UTC datetime (TUF expiry is wall-clock time)."""
    return datetime.now(UTC)
