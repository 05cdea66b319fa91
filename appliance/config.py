"""Service configuration: layered TOML files validated into frozen dataclasses.

Layers, lowest first (style guide 4.8): the package's ``default.toml``, then
``/etc/appliance/appliance.toml`` (the image), then
``/var/lib/appliance/provisioned.toml`` (written by provisioning). Later layers
override earlier ones key by key.

Every section (``[phone]``, ``[device]`` = every Device option, ``[log]``,
``[ui]`` with ``[ui.directory]``, ``[update]``) goes through the one schema mechanism of
:mod:`appliance.schema`, so one run reports *every* problem, each naming
``section.key``, unknown keys with a "did you mean" hint. The result holds
parsed values only; :func:`dump_config` writes them back as TOML for
``appliance show-config``.

The access token never lives in these files: ``phone.token_file`` points at a
separate 0600 file, and the token is held as a :class:`Secret` that prints as
``********``. A layer that holds a TURN credential must be mode 0600 as well,
or it is refused. A layer named with ``--config`` must exist; the service's
provisioned layer, absent until provisioning, is named with
``--config-if-exists``.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.files import check_private
from appliance.phone.options import DeviceOptions, options_to_mapping, parse_options
from appliance.schema import Problems, did_you_mean, dumps, register, structure
from appliance.ui.settings import UiConfig, parse_ui_config, ui_config_to_mapping
from appliance.update.settings import (
    UpdateConfig,
    parse_update_config,
    update_config_to_mapping,
)
from appliance.web.settings import (
    WebConfig,
    parse_web_config,
    web_config_to_mapping,
)

__all__ = [
    "DEFAULT_LAYERS",
    "LOG_LEVELS",
    "AppConfig",
    "Secret",
    "config_to_mapping",
    "dump_config",
    "environ_token",
    "load_config",
    "merge_layers",
    "parse_config",
    "read_token",
]

DEFAULT_LAYERS = (
    Path("/etc/appliance/appliance.toml"),
    Path("/var/lib/appliance/provisioned.toml"),
)

#: Values of ``log.level``.
LOG_LEVELS = ("debug", "info", "warning", "error")
_SECTIONS = ("phone", "device", "log", "ui", "update", "web")
#: Shown instead of a secret value (TURN credentials) by :func:`dump_config`.
MASK = "********"


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself (only to hand it to the gateway)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return MASK


@dataclass(frozen=True)
class _PhoneSection:
    token_file: str | None = None
    provisioner_url: str | None = None
    provisioner_ca_file: str | None = None
    credential_file: str = "/var/lib/appliance/device-credential"
    usb_dir: str | None = None
    usb_public_key_file: str | None = None


@dataclass(frozen=True)
class _LogSection:
    level: str = "info"


def _token_file(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a file path")
    return value


def _level(value: Any) -> str:
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return str(value)


def _provisioner_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


register(
    _PhoneSection,
    {
        "token_file": _token_file,
        "credential_file": _token_file,
        "provisioner_ca_file": _token_file,
        "usb_dir": _token_file,
        "usb_public_key_file": _token_file,
        "provisioner_url": _provisioner_url,
    },
)
register(_LogSection, {"level": _level})


@dataclass(frozen=True)
class AppConfig:
    """The merged, validated service configuration.

    Attributes:
        token_file: the access token's file (``phone.token_file``).
        device: the Device options (``[device]``).
        log_level: ``log.level``, one of :data:`LOG_LEVELS`.
        sources: the layers read, lowest first (``<default>`` first).
        ui: the front panel (``[ui]``).
        provisioner_url: the provisioner (``phone.provisioner_url``); when
            set, the phone gets its identity and tokens from it and
            ``token_file`` is not used.
        credential_file: where the device credential is kept (0600).
        provisioner_ca_file: CA certificates (PEM) that the provisioner's
            HTTPS certificate must chain to, instead of the system's.
        usb_dir / usb_public_key_file: where the image mounts USB sticks,
            and the provisioner's Ed25519 public key their provisioning
            files must be signed with (both, or no USB provisioning).
        update: remote updates (``[update]``; off without ``update.url``).
        web: the phone's web page (``[web]``, docs/web.md).
    """

    token_file: Path | None = None
    device: DeviceOptions = field(default_factory=DeviceOptions)
    log_level: str = "info"
    sources: tuple[str, ...] = ()
    ui: UiConfig = field(default_factory=UiConfig)
    provisioner_url: str | None = None
    credential_file: Path = Path("/var/lib/appliance/device-credential")
    provisioner_ca_file: Path | None = None
    usb_dir: Path | None = None
    usb_public_key_file: Path | None = None
    update: UpdateConfig = field(default_factory=UpdateConfig)
    web: WebConfig = field(default_factory=WebConfig)


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value


def _holds_secret(layer: Mapping[str, Any]) -> bool:
    """Whether a layer carries a secret value (a TURN credential)."""
    device = layer.get("device")
    rtc = device.get("rtc_configuration") if isinstance(device, Mapping) else None
    servers = rtc.get("ice_servers") if isinstance(rtc, Mapping) else None
    return isinstance(servers, list) and any(
        isinstance(server, Mapping) and "credential" in server for server in servers
    )


def _read_layer(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            layer = tomllib.load(f)
        if _holds_secret(layer):
            check_private(path, str(path), mode)
        return layer
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc


def merge_layers(
    paths: Sequence[Path] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The default layer merged with each existing file of ``paths``, and the
    names of the layers read.

    Raises:
        ConfigError: a file that cannot be read or is not TOML.
    """
    default = resources.files("appliance").joinpath("default.toml").read_text()
    merged: dict[str, Any] = tomllib.loads(default)
    sources = ["<default>"]
    for path in DEFAULT_LAYERS if paths is None else paths:
        if not path.exists():
            continue
        _merge(merged, _read_layer(path))
        sources.append(str(path))
    return merged, sources


def parse_config(merged: Mapping[str, Any], sources: Sequence[str] = ()) -> AppConfig:
    """Validate a merged configuration table.

    Each section is validated even when another one has errors, so that one
    run reports them all.

    Raises:
        ConfigError: every problem, each naming ``section.key``.
    """
    problems = Problems()
    for section in merged:
        if section not in _SECTIONS:
            problems.add(section, "unknown section" + did_you_mean(section, _SECTIONS))
    parsed: dict[str, Any] = {}
    steps: dict[str, Any] = {
        "phone": lambda raw: structure(raw, _PhoneSection, "phone"),
        "device": parse_options,
        "log": lambda raw: structure(raw, _LogSection, "log"),
        "ui": lambda raw: parse_ui_config(raw, "ui"),
        "update": lambda raw: parse_update_config(raw, "update"),
        "web": lambda raw: parse_web_config(raw, "web"),
    }
    for section, step in steps.items():
        raw = merged.get(section, {})
        try:
            if not isinstance(raw, Mapping):
                raise ConfigError("", "must be a table")
            parsed[section] = step(raw)
        except ConfigError as exc:
            # parse_options names keys without the section; the others with it.
            problems.extend(exc, section if section == "device" or not exc.key else "")
    problems.check()
    phone = parsed["phone"]
    token_file = phone.token_file
    return AppConfig(
        provisioner_url=phone.provisioner_url,
        credential_file=Path(phone.credential_file),
        provisioner_ca_file=(
            Path(phone.provisioner_ca_file) if phone.provisioner_ca_file else None
        ),
        usb_dir=Path(phone.usb_dir) if phone.usb_dir else None,
        usb_public_key_file=(
            Path(phone.usb_public_key_file) if phone.usb_public_key_file else None
        ),
        token_file=Path(token_file) if token_file else None,
        device=parsed["device"],
        log_level=parsed["log"].level,
        sources=tuple(sources),
        ui=parsed["ui"],
        update=parsed["update"],
        web=parsed["web"],
    )


def load_config(paths: Sequence[Path] | None = None) -> AppConfig:
    """Load the default layer and then each existing file of ``paths``.

    ``paths`` defaults to :data:`DEFAULT_LAYERS`; a missing file is skipped, an
    unreadable or invalid one is an error.

    Raises:
        ConfigError: names the file, or every ``section.key`` at fault.
    """
    merged, sources = merge_layers(paths)
    return parse_config(merged, sources)


def config_to_mapping(
    config: AppConfig, *, mask_secrets: bool = True
) -> dict[str, Any]:
    """``config`` as TOML tables that :func:`parse_config` turns back into it.

    With ``mask_secrets`` (the default), TURN credentials read ``********``.
    """
    device = options_to_mapping(config.device)
    if mask_secrets:
        for server in device.get("rtc_configuration", {}).get("ice_servers", []):
            if "credential" in server:
                server["credential"] = MASK
    phone: dict[str, Any] = {"credential_file": str(config.credential_file)}
    if config.token_file is not None:
        phone["token_file"] = str(config.token_file)
    if config.provisioner_url is not None:
        phone["provisioner_url"] = config.provisioner_url
    for key in ("provisioner_ca_file", "usb_dir", "usb_public_key_file"):
        if getattr(config, key) is not None:
            phone[key] = str(getattr(config, key))
    return {
        "phone": phone,
        "device": device,
        "log": {"level": config.log_level},
        "ui": ui_config_to_mapping(config.ui),
        "update": update_config_to_mapping(config.update),
        "web": web_config_to_mapping(config.web),
    }


def dump_config(config: AppConfig) -> str:
    """The validated configuration as TOML, secrets masked, layers in a comment."""
    header = f"# layers: {', '.join(config.sources)}\n" if config.sources else ""
    return header + dumps(config_to_mapping(config))


def read_token(path: Path) -> Secret:
    """Read the access token from ``path``.

    A token file readable by other users is refused: it grants calls on the
    account.

    Raises:
        ConfigError: missing, empty, or group/world-readable file.
    """
    try:
        info = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            "phone.token_file", f"cannot read {path}: {exc.strerror}"
        ) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "phone.token_file", f"{path} must not be readable by others (chmod 600)"
        )
    if not text:
        raise ConfigError("phone.token_file", f"{path} is empty")
    return Secret(text)


def environ_token() -> Secret | None:
    """The token from the ``APPLIANCE_TOKEN`` environment variable, if set."""
    value = os.environ.get("APPLIANCE_TOKEN")
    return Secret(value) if value else None
