"""ComfyUI's own HTTP API over urllib (blocking; the dispatcher runs these calls in threads)."""
from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ServerError(RuntimeError):
    """The server did not answer (status None), or answered with an HTTP error status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Comfy:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def is_loopback(self) -> bool:
        return (urllib.parse.urlsplit(self.url).hostname or "") in LOOPBACK

    def _open(self, req, timeout: float | None = None) -> bytes:
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:2000]
            raise ServerError(f"{self.url}: HTTP {e.code} for {getattr(req, 'full_url', req)}: {body}",
                              e.code) from e
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"{self.url}: no answer ({getattr(e, 'reason', e)})") from e

    def get(self, path: str, timeout: float | None = None):
        return json.loads(self._open(self.url + path, timeout))

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(self._open(req) or b"{}")

    def queue_prompt(self, prompt: dict, client_id: str) -> str:
        """POST /prompt; a prompt the server rejects (node_errors) raises ServerError with its text."""
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]

    def pending(self) -> int:
        return len(self.get("/queue").get("queue_pending") or [])

    def history(self, prompt_id: str) -> dict | None:
        return self.get(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def upload_image(self, path: Path, name: str) -> str:
        """Upload to the server's input folder under `name` (overwriting: names carry a content hash);
        returns the name LoadImage takes."""
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n").encode(), Path(path).read_bytes(), b"\r\n"]
        for field, value in (("overwrite", "true"), ("type", "input")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; '
                         f'name="{field}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f"--{boundary}--\r\n".encode())
        req = urllib.request.Request(self.url + "/upload/image", data=b"".join(parts),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        body = json.loads(self._open(req))
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else body["name"]

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._open(f"{self.url}/view?{query}", timeout=120)
