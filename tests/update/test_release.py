"""The release tool builds a real TUF repository of static files."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from appliance.cli import main
from appliance.update.artifact import MANIFEST
from tests.update.helpers import Publisher, make_wheel, release

ROOT = Path(__file__).resolve().parents[2]


def _md(repo: Path, name: str) -> Metadata:
    return Metadata.from_bytes((repo / "metadata" / name).read_bytes())


def _verify(root: Root, md: Metadata) -> None:
    root.verify_delegate(md.signed.type, md.signed_bytes, md.signatures)


def test_init_makes_four_signed_roles_and_private_key_files(tmp_path):
    pub = Publisher(tmp_path)
    root = _md(pub.repo, "1.root.json")
    assert isinstance(root.signed, Root)
    assert root.signed.consistent_snapshot
    _verify(root.signed, root)
    for name in ("1.targets.json", "1.snapshot.json", "timestamp.json"):
        _verify(root.signed, _md(pub.repo, name))
    online = sorted(p.name for p in pub.keys.iterdir())
    assert online == ["snapshot-1.pem", "targets-1.pem", "timestamp-1.pem"]
    assert [p.name for p in pub.root_keys.iterdir()] == ["root-1.pem"]
    for key in [*pub.keys.iterdir(), *pub.root_keys.iterdir()]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # nothing secret is published
    assert not [p for p in pub.repo.rglob("*") if b"PRIVATE" in _bytes(p)]


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def test_init_refuses_to_overwrite_and_to_keep_root_keys_online(tmp_path, capsys):
    Publisher(tmp_path)
    assert (
        main(
            [
                "release",
                "init",
                "--repo",
                str(tmp_path / "repo"),
                "--keys",
                str(tmp_path / "k"),
                "--root-keys",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "exists already" in capsys.readouterr().err
    assert (
        main(
            [
                "release",
                "init",
                "--repo",
                str(tmp_path / "other"),
                "--keys",
                str(tmp_path / "k"),
                "--root-keys",
                str(tmp_path / "k"),
            ]
        )
        == 2
    )
    assert "must not be the online key directory" in capsys.readouterr().err


def test_thresholds_make_that_many_keys_and_need_them_all(tmp_path):
    release(
        "init",
        "--repo",
        tmp_path / "repo",
        "--keys",
        tmp_path / "keys",
        "--root-keys",
        tmp_path / "rk",
        "--threshold",
        "root=2",
        "--threshold",
        "targets=3",
        "--expires",
        "timestamp=2",
    )
    root = _md(tmp_path / "repo", "1.root.json").signed
    assert root.roles["root"].threshold == 2
    assert root.roles["targets"].threshold == 3
    assert len(root.roles["targets"].keyids) == 3
    assert len(list((tmp_path / "rk").glob("root-*.pem"))) == 2
    targets = _md(tmp_path / "repo", "1.targets.json")
    assert len(targets.signatures) == 3
    one_short = Metadata.from_bytes(targets.to_bytes())
    one_short.signatures.popitem()
    with pytest.raises(UnsignedMetadataError, match="signed by 2/3 keys"):
        _verify(root, one_short)


def test_bad_threshold_is_a_usage_error(tmp_path, capsys):
    status = main(
        [
            "release",
            "init",
            "--repo",
            str(tmp_path / "r"),
            "--keys",
            str(tmp_path / "k"),
            "--root-keys",
            str(tmp_path / "rk"),
            "--threshold",
            "banana=2",
        ]
    )
    assert status == 2
    assert "ROLE=N" in capsys.readouterr().err


def test_add_publishes_a_version_named_artifact_and_resigns(tmp_path):
    pub = Publisher(tmp_path)
    pub.add("0.2.0")
    root = _md(pub.repo, "1.root.json").signed
    targets = _md(pub.repo, "2.targets.json")
    snapshot = _md(pub.repo, "2.snapshot.json")
    timestamp = _md(pub.repo, "timestamp.json")
    for md in (targets, snapshot, timestamp):
        _verify(root, md)
    assert isinstance(snapshot.signed, Snapshot)
    assert snapshot.signed.meta["targets.json"].version == 2
    assert isinstance(timestamp.signed, Timestamp)
    assert timestamp.signed.snapshot_meta.version == 2
    assert isinstance(targets.signed, Targets)
    path = "releases/0.2.0/appliance-0.2.0-any.tar.gz"
    info = targets.signed.targets[path]
    assert info.custom["version"] == "0.2.0"
    assert info.custom["manifest"]["wheels"].keys() == {
        "appliance-0.2.0-py3-none-any.whl"
    }
    # consistent snapshot: the file is stored under its hash-prefixed name
    stored = (
        pub.repo
        / "targets/releases/0.2.0"
        / f"{info.hashes['sha256']}.{path.split('/')[-1]}"
    )
    with tarfile.open(stored) as tar:
        assert sorted(tar.getnames()) == [
            MANIFEST,
            "wheels/appliance-0.2.0-py3-none-any.whl",
        ]
    pointer = targets.signed.targets["channels/any/latest.json"]
    assert pointer.custom == {"version": "0.2.0", "platform": "any"}


def test_add_refuses_a_version_not_newer(tmp_path, capsys):
    pub = Publisher(tmp_path)
    pub.add("0.3.0")
    wheel = make_wheel(tmp_path / "old", "0.2.9")
    assert (
        main(
            [
                "release",
                "add",
                "--repo",
                str(pub.repo),
                "--keys",
                str(pub.keys),
                "--wheel",
                str(wheel),
            ]
        )
        == 2
    )
    assert "not newer than the published 0.3.0" in capsys.readouterr().err


def test_timestamp_resigns_only_the_timestamp(tmp_path):
    pub = Publisher(tmp_path)
    before = sorted(p.name for p in (pub.repo / "metadata").iterdir())
    version = _md(pub.repo, "timestamp.json").signed.version
    pub.timestamp()
    assert sorted(p.name for p in (pub.repo / "metadata").iterdir()) == before
    assert _md(pub.repo, "timestamp.json").signed.version == version + 1


def test_timestamp_needs_no_root_key(tmp_path):
    pub = Publisher(tmp_path)
    for key in pub.root_keys.iterdir():
        key.unlink()  # the root key is offline: cron works without it
    pub.timestamp()
    pub.add("0.2.0")


def test_add_builds_this_repository_wheel(tmp_path):
    pub = Publisher(tmp_path)
    release("add", "--repo", pub.repo, "--keys", pub.keys, "--source", ROOT)
    targets = _md(pub.repo, "2.targets.json").signed
    from appliance import __version__

    path = f"releases/{__version__}/appliance-{__version__}-any.tar.gz"
    manifest = targets.targets[path].custom["manifest"]
    assert manifest["complete"] is False
    assert list(manifest["wheels"]) == [f"appliance-{__version__}-py3-none-any.whl"]


def test_release_command_runs_as_a_process(tmp_path):
    # The documented command line, in its own process, as cron would run it.
    pub = Publisher(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "release",
            "timestamp",
            "--repo",
            str(pub.repo),
            "--keys",
            str(pub.keys),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads((pub.repo / "metadata/timestamp.json").read_text())["signed"][
            "version"
        ]
        == 2
    )
