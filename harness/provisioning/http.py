"""A small HTTP server for one test: serves extension images to the guest.

Bound to 127.0.0.1 only; the guest reaches it through QEMU user networking as 10.0.2.2.
Every request is recorded, so tests can check what the guest really fetched.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

GUEST_HOST_ADDRESS = "10.0.2.2"  # QEMU user networking's alias for the host's loopback


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        status = args[1] if len(args) > 1 else ""
        self.server.requests.append(f"{self.command} {self.path} -> {status}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]


class ArtifactServer:
    """Serve `directory` on a free loopback port for the length of a `with` block."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        handler = functools.partial(_Handler, directory=str(directory))
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.requests = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sysext-harness-http")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[str]:
        return list(self._server.requests)

    def guest_url(self, name: str) -> str:
        return f"http://{GUEST_HOST_ADDRESS}:{self.port}/{name}"

    def host_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
