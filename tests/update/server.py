"""A TUF repository served over HTTP on 127.0.0.1, as a CDN would serve it.

Plain files (http.server) in a thread, answering ``Range: bytes=N-`` as a
CDN does (206, for the resumable downloads), plus ``overrides``: a request path
mapped to a function giving the bytes to send instead, which is how the
security tests play a malicious server or network. ``requests`` records
every path asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Body = Callable[[], Iterator[bytes]]


class _Handler(SimpleHTTPRequestHandler):
    server: RepositoryServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = self.server.overrides.get(self.path)
        wanted = self.headers.get("Range", "")
        if body is None and wanted.startswith("bytes=") and wanted.endswith("-"):
            self.server.ranges.append((self.path, wanted))
            self._send_from(int(wanted[len("bytes=") : -1]))
            return
        if body is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            for chunk in body():
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the test wants

    def _send_from(self, start: int) -> None:
        """A ``206 Partial Content`` answer from byte ``start`` to the end."""
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        self.server.sent += len(data) - start

    def log_message(self, format: str, *args: object) -> None:
        pass


class RepositoryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self.requests: list[str] = []
        self.overrides: dict[str, Body] = {}
        #: (path, Range header) of each range request answered (206).
        self.ranges: list[tuple[str, str]] = []
        #: Bytes sent in 206 answers.
        self.sent = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> RepositoryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


def endless() -> Iterator[bytes]:
    """A response that never ends."""
    block = b"\0" * 65536
    while True:
        yield block
