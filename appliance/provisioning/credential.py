"""The phone's device credential file: read it safely, replace it atomically.

The file is JSON ``{"credential": "PH….<secret>", "identity": "…",
"provisioner": "https://…"}``, mode 0600, plus ``ca_pem`` and ``pin`` when
the credential came with the provisioner's CA or certificate pin (a USB
file, :mod:`.trust`): kept in the same file so that the credential and the
way to recognise its provisioner are replaced together, in one rename.
Writes go through :func:`appliance.files.write_atomic` (temporary file,
fsync, rename, directory fsync), so a power cut leaves the old credential
or the new one, never a torn file. Blocking: call through
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ProvisioningError
from appliance.files import fsync_dir, write_atomic

__all__ = [
    "StoredCredential",
    "forget_credential",
    "load_credential",
    "save_credential",
]

#: A credential file is small (a CA bundle at most 8 KiB); a larger one is not ours.
MAX_SIZE = 16 * 1024


@dataclass(frozen=True)
class StoredCredential:
    """What the credential file holds; the repr hides the credential."""

    credential: str
    identity: str
    provisioner: str
    ca_pem: str = ""
    pin: str = ""

    def __repr__(self) -> str:
        return (
            f"StoredCredential(identity={self.identity!r}, "
            f"provisioner={self.provisioner!r}, credential='********', "
            f"pin={self.pin!r})"
        )


def load_credential(path: Path) -> StoredCredential | None:
    """The saved credential, or ``None`` when there is no file.

    Raises:
        ProvisioningError: the file is readable by others, not a regular
            file, too large, or not a credential file.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisioningError(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ProvisioningError(f"{path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisioningError(f"{path} must not be readable by others (chmod 600)")
    if info.st_size > MAX_SIZE:
        raise ProvisioningError(f"{path} is too large for a credential file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"{path} is not a credential file") from exc
    fields = ("credential", "identity", "provisioner")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) and data[k] for k in fields
    ):
        raise ProvisioningError(f"{path} is not a credential file")
    extra = {k: data.get(k, "") for k in ("ca_pem", "pin")}
    if not all(isinstance(v, str) for v in extra.values()):
        raise ProvisioningError(f"{path} is not a credential file")
    return StoredCredential(*(str(data[k]) for k in fields), **extra)


def save_credential(path: Path, stored: StoredCredential) -> None:
    """Replace the credential file atomically, mode 0600.

    Raises:
        ProvisioningError: it could not be written (the old file is kept).
    """
    fields = {
        "credential": stored.credential,
        "identity": stored.identity,
        "provisioner": stored.provisioner,
    }
    if stored.ca_pem:
        fields["ca_pem"] = stored.ca_pem
    if stored.pin:
        fields["pin"] = stored.pin
    body = json.dumps(fields)
    try:
        write_atomic(path, body.encode())
    except OSError as exc:
        raise ProvisioningError(f"cannot write {path}: {exc.strerror}") from exc


def forget_credential(path: Path) -> bool:
    """Remove the credential file (``appliance provision reset``); no backup.

    Returns whether there was one. The unlink is made durable (the
    directory is fsynced), so a power cut right after cannot bring it back.

    Raises:
        ProvisioningError: it could not be removed.
    """
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ProvisioningError(f"cannot remove {path}: {exc.strerror}") from exc
    fsync_dir(path.parent)
    return True
