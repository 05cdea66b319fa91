"""systemd's sd_notify protocol: READY, STATUS, WATCHDOG and STOPPING.

A datagram to the Unix socket named by ``$NOTIFY_SOCKET`` (sd_notify(3)); a
leading ``@`` means an abstract socket. Outside systemd the variable is unset
and every call does nothing. The protocol is a few lines, so no dependency.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier", "watchdog_interval_s"]

logger = logging.getLogger(__name__)


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (ping twice per period), if set."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends state strings to systemd."""

    def __init__(self, address: str | None = None) -> None:
        self._address = (
            address if address is not None else os.environ.get("NOTIFY_SOCKET")
        )
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        self._stopped = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return bool(self._address)

    def notify(self, state: str) -> None:
        """Send ``state`` (e.g. ``"READY=1"``); errors are logged, not raised.

        Nothing is sent after :meth:`stopping`: a status line from the
        shutdown itself ("offline" as the Device closes) would tell systemd
        the service is reconnecting while it is stopping.
        """
        if not self._address or self._stopped:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as exc:
            logger.warning("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        """Tell systemd the service is up."""
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """Update the status line shown by ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Keep-alive ping for ``WatchdogSec=``."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd the service is shutting down; the last notice sent."""
        self.notify("STOPPING=1")
        self._stopped = True
