"""Start the real ComfyUI server (main.py) on loopback with this pack installed, for HTTP tests.

The server runs in its own process with `--base-directory` pointing at a temp folder whose
custom_nodes/ holds a link to this checkout (as a user's install would) and the test-only tiny pack.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import host

PACK_DIR_NAME = "comfyui-photomaker-stackedid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path | None = None, with_tiny_pack: bool = True, frontend: bool = False,
                 extra_args: list[str] | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix="pm-server-"))
        self.root = host.host_path()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        custom = self.base / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        link = custom / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(host.REPO_ROOT, target_is_directory=True)
        if with_tiny_pack and not (custom / "pm_tiny_pack").exists():
            (custom / "pm_tiny_pack").symlink_to(Path(__file__).parent / "tiny_pack",
                                                 target_is_directory=True)
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
                "--disable-auto-launch"]
        if not frontend:  # the server exits without the frontend package unless given a root
            empty = self.base / "empty-frontend"
            empty.mkdir(exist_ok=True)
            args += ["--front-end-root", str(empty)]
        self.args = args + list(extra_args or [])
        self.proc = None
        self.log_path = self.base / "server.log"

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        env = dict(os.environ, OMP_NUM_THREADS="1")  # server and test client share 2 cores
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=self.root, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "pm-test"})
        if status != 200:
            raise RuntimeError(f"prompt rejected ({status}): {body}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
