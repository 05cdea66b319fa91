"""Fixtures: a repository made by the release tool, served on 127.0.0.1, and a
phone root (temp dir) with release 1.0.0 installed and current."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.update.artifact import build_artifact
from appliance.update.policy import UpdatePolicy
from appliance.update.releases import Releases
from appliance.update.service import StateFile, Updater
from appliance.update.source import ReleaseSource
from tests.update.helpers import Publisher, make_wheel
from tests.update.server import RepositoryServer


@pytest.fixture
def publisher(tmp_path) -> Publisher:
    pub = Publisher(tmp_path / "publisher")
    pub.add("1.1.0")
    return pub


@pytest.fixture
def server(publisher) -> Iterator[RepositoryServer]:
    with RepositoryServer(publisher.repo) as srv:
        yield srv


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Publisher, RepositoryServer]]:
    """An empty repository and its server, for tests that publish themselves."""
    publisher = Publisher(tmp_path / "publisher")
    with RepositoryServer(publisher.repo) as server:
        yield publisher, server


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Phone:
    """A phone's disk under ``root``; ``updater()`` is its service starting."""

    root: Path
    url: str
    trust_root: bytes
    clock: Clock = field(default_factory=Clock)
    restarts: int = 0
    max_bytes: int = 64 * 1024 * 1024
    reserve_bytes: int = 0
    #: Committed as soon as the health facts are in: these tests drive the
    #: clock by hand (the stay-up bound: test_machine.py, test_updater.py,
    #: test_in_service.py).
    policy: UpdatePolicy = field(default_factory=lambda: UpdatePolicy(stay_up_s=0))

    @property
    def releases(self) -> Releases:
        return Releases(self.root)

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/appliance/update"

    def source(self) -> ReleaseSource:
        return ReleaseSource(
            url=self.url,
            trust_root=self.trust_root,
            state_dir=self.state_dir / "tuf",
            download_dir=self.state_dir / "downloads",
            platform="linux_aarch64",
            max_bytes=self.max_bytes,
            reserve_bytes=self.reserve_bytes,
            socket_timeout=5,
        )

    def updater(self) -> Updater:
        """The service (re)starting from whatever `current` points at."""

        async def restart() -> None:
            self.restarts += 1

        updater = Updater(
            policy=self.policy,
            source=self.source(),
            releases=self.releases,
            state_file=StateFile(self.state_dir / "state.json"),
            running=self.releases.current,
            restart=restart,
            clock=self.clock,
            minute=lambda: 12 * 60,
        )
        updater.start()
        return updater

    def installed_version(self) -> str:
        init = self.root / "opt/appliance/current/lib/appliance_release/__init__.py"
        namespace: dict[str, str] = {}
        exec(init.read_text(), namespace)
        return namespace["VERSION"]


@pytest.fixture
def phone(tmp_path, publisher, server) -> Phone:
    root = tmp_path / "phone"
    wheel = make_wheel(tmp_path / "factory", "1.0.0")
    artifact = build_artifact(
        [wheel], tmp_path / "factory", complete=False, platform="any"
    )
    releases = Releases(root)
    releases.install(artifact.path, "1.0.0")
    releases.switch("1.0.0")
    return Phone(root, server.url, publisher.root)
