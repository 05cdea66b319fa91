"""A stick pulled mid-read: the file was listed, then its read fails with a
real EIO (a loop-mounted ext2 image whose device shrinks under it, as a
pulled stick's does) or the file is gone. The phone refuses it clearly, once,
keeps its credential byte for byte and carries on."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.provisioning import usb
from appliance.provisioning.credential import StoredCredential, save_credential
from appliance.provisioning.phone import PhoneProvisioning, UsbSource
from appliance.provisioning.usb import FILE_NAME, sign_bundle
from tests.conftest import wait_until
from tests.provisioning.test_usb_feedback import token_server  # noqa: F401

KEY = Ed25519PrivateKey.generate()


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def loop_stick(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(image, mount point, loop device): an ext2 image mounted read-only."""
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup to mount a loop device")
    image = tmp_path / "stick.img"
    with image.open("wb") as f:
        f.truncate(4 * 1024 * 1024)
    _run("mkfs.ext2", "-q", str(image))
    mount = tmp_path / "stick"
    mount.mkdir()
    try:
        device = _run("losetup", "--find", "--show", str(image)).strip()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no loop device: {exc.stderr.strip()}")
    mounted = False
    try:
        _run("mount", "-t", "ext2", device, str(mount))
        mounted = True
        yield image, mount, device
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "--detach", device], check=False)


def _phone(
    url: str, tmp_path: Path, stick: Path
) -> tuple[PhoneProvisioning, list[str], list[tuple[str, int | None]]]:
    (tmp_path / "usb.pub").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    (tmp_path / "machine-id").write_text("phone-0001\n")
    tokens: list[str] = []
    results: list[tuple[str, int | None]] = []

    async def apply(token: str) -> None:
        tokens.append(token)

    phone = PhoneProvisioning(
        url,
        tmp_path / "credential",
        stick=UsbSource(stick, tmp_path / "usb.pub", (tmp_path / "machine-id",)),
        apply_token=apply,
        show=lambda _view: None,
        status=lambda _line: None,
        usb_result=lambda message, code: results.append((message, code)),
    )
    return phone, tokens, results


def _good_file(url: str) -> bytes:
    return sign_bundle(
        KEY,
        provisioner_url=url,
        identity="bob",
        credential="PH" + "1" * 32 + ".new",
        expires_at=4e9,
        device_id="phone-0001",
    )


def _credential(tmp_path: Path, url: str) -> bytes:
    save_credential(
        tmp_path / "credential",
        StoredCredential("PH" + "0" * 32 + ".old", "alice", url),
    )
    return (tmp_path / "credential").read_bytes()


async def _run_until_refused(
    phone: PhoneProvisioning,
    tokens: list[str],
    results: list[tuple[str, int | None]],
    looks: list[Path],
) -> None:
    task = asyncio.get_running_loop().create_task(phone.run())
    try:
        await wait_until(lambda: results, 10.0)
        assert results == [("USB read error", 31009)]
        seen = len(looks)
        await wait_until(lambda: len(looks) >= seen + 5, 10.0)
        assert results == [("USB read error", 31009)]  # once per insertion
        await wait_until(lambda: tokens, 10.0)  # the phone carries on
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _count_looks(monkeypatch: pytest.MonkeyPatch, then: object = None) -> list[Path]:
    looks: list[Path] = []
    real = usb.stick_file

    def counted(directory: Path) -> tuple[int, int] | None:
        looks.append(directory)
        found = real(directory)
        if callable(then) and found is not None:
            then(directory)
        return found

    monkeypatch.setattr(usb, "stick_file", counted)
    monkeypatch.setattr(usb, "POLL_S", 0.05)
    return looks


async def test_a_read_failing_with_eio_is_refused_and_the_credential_kept(
    loop_stick: tuple[Path, Path, str],
    token_server: str,  # noqa: F811  # the fixture
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    image, mount, device = loop_stick
    (mount / FILE_NAME).write_bytes(_good_file(token_server))
    # Remount so the file's data is no longer cached, list it (its inode is
    # now in memory, as when the phone saw it), then pull the stick: the
    # device shrinks to nothing under the mounted file system.
    _run("umount", str(mount))
    _run("mount", "-t", "ext2", "-o", "ro", device, str(mount))
    assert (mount / FILE_NAME).stat().st_size > 0
    image.write_bytes(b"")
    _run("losetup", "--set-capacity", device)
    with pytest.raises(OSError) as info:
        (mount / FILE_NAME).read_bytes()
    assert info.value.errno == 5  # EIO, as from a pulled stick

    before = _credential(tmp_path, token_server)
    looks = _count_looks(monkeypatch)
    caplog.set_level(logging.INFO, "appliance.provisioning.phone")
    phone, tokens, results = _phone(token_server, tmp_path, mount)
    await _run_until_refused(phone, tokens, results, looks)
    refusals = [m for m in caplog.messages if "refused" in m]
    assert len(refusals) == 1 and "error 31009" in refusals[0], refusals
    assert (tmp_path / "credential").read_bytes() == before


async def test_a_file_gone_between_listing_and_reading_is_refused(
    token_server: str,  # noqa: F811  # the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / FILE_NAME).write_bytes(_good_file(token_server))
    before = _credential(tmp_path, token_server)
    # The stick leaves right after the phone listed the file.
    looks = _count_looks(
        monkeypatch, lambda directory: (directory / FILE_NAME).unlink()
    )
    phone, tokens, results = _phone(token_server, tmp_path, stick)
    await _run_until_refused(phone, tokens, results, looks)
    assert (tmp_path / "credential").read_bytes() == before
