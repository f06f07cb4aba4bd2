"""Start a sidecar as a child process, wait until it answers, always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A loopback port that was free a moment ago (for programs that cannot
    bind port 0 and report it back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.argv = argv
        self.log = Path(log)
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # its own group: stop() reaches its children too
        )
        # sidecars/test.sh ends these if pytest itself dies before stop().
        pidfile = os.environ.get("DIDMESH_SIDECARS_PIDFILE")
        if pidfile:
            with open(pidfile, "a") as out:
                out.write(f"{self.proc.pid}\n")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_http(self, url: str, timeout: float = 30.0, status: int | None = None) -> None:
        """Until `url` answers (with `status`, if given); fail early if the child dies."""
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if status in (None, session.get(url, timeout=1).status_code):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not answering after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log_file.close()
