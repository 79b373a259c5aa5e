"""Jobs over servers: each server gets a job only while nothing waits in its queue (so a slow
machine never sits on a backlog), progress comes over its websocket, results from /history and
/view. A server that stops answering has its jobs queued again on the others; a job that fails is
retried up to `retries` times."""
from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp  # a ComfyUI dependency (its server runs on it)

from . import manifest
from .client import Comfy, ServerError
from .inputs import Person, file_digest
from .workflow import Template, bind

SCORE_LINE = re.compile(r"^#\d+\s+image (\d+): (no face|-?\d+(?:\.\d+)?)", re.MULTILINE)
DONE_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class Job:
    key: str
    person: Person | None
    prompt: str
    seed: int
    attempts: int = 0  # times queued on a server
    failures: int = 0  # times the server reported an error
    errors: list[str] = field(default_factory=list)

    @property
    def person_name(self) -> str:
        return self.person.name if self.person else ""


@dataclass
class Server:
    comfy: Comfy
    template: Template
    identities: dict[str, str] = field(default_factory=dict)  # person -> Load Identity name
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    inflight: dict[str, Job] = field(default_factory=dict)
    photos: dict[str, list[str]] = field(default_factory=dict)  # person -> uploaded names
    alive: bool = True
    done: int = 0
    failed: int = 0
    started: float | None = None
    last_ok: float = field(default_factory=time.monotonic)
    step: str = ""

    @property
    def name(self) -> str:
        return self.comfy.url

    def rate(self) -> float:
        """Jobs finished per minute since this server got its first job."""
        if not self.started or not self.done:
            return 0.0
        return 60.0 * self.done / max(1e-6, time.monotonic() - self.started)


def photo_upload_name(person: Person, path: Path, digest: str) -> str:
    return f"pmbatch-{person.name}-{digest[:10]}{path.suffix.lower()}"


def parse_scores(report: str) -> list[float | None]:
    """Per-image Face Sim. scores (input order) from the Face Similarity node's report text, whose
    lines number the images from 1 ("#1  image 3: 0.4210")."""
    found = {int(i): (None if s == "no face" else float(s)) for i, s in SCORE_LINE.findall(report or "")}
    return [found.get(i) for i in range(1, max(found) + 1)] if found else []


def execution_error(entry: dict) -> str:
    for kind, data in (entry.get("status") or {}).get("messages") or []:
        if kind == "execution_error":
            return (f"{data.get('node_type')} (node {data.get('node_id')}): "
                    f"{data.get('exception_message', '').strip()}")
        if kind == "execution_interrupted":
            return "interrupted on the server"
    return f"status {(entry.get('status') or {}).get('status_str')}"


def execution_seconds(entry: dict) -> float | None:
    stamps = {k: d.get("timestamp") for k, d in (entry.get("status") or {}).get("messages") or []
              if isinstance(d, dict)}
    start, end = (stamps.get("execution_start"),
                  stamps.get("execution_success") or stamps.get("execution_error"))
    return round((end - start) / 1000.0, 3) if start and end else None


class Dispatcher:
    def __init__(self, servers: list[Server], jobs: list[Job], writer: manifest.Writer, out_dir: Path,
                 retries: int, run_id: str, extra: dict, server_timeout: float = 15.0, poll: float = 0.5,
                 stream=sys.stderr):
        self.servers, self.writer, self.out_dir = servers, writer, Path(out_dir)
        self.queue: deque[Job] = deque(jobs)
        self.total = len(jobs)
        self.retries, self.run_id, self.extra = retries, run_id, extra
        self.server_timeout, self.poll, self.stream = server_timeout, poll, stream
        self.done: list[dict] = []
        self.failed: list[dict] = []
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_line = ""

    # --------------------------------------------------------------------------------- run

    async def run(self) -> None:
        stop = asyncio.Event()
        printer = asyncio.create_task(self._progress(stop))
        try:
            await asyncio.gather(*(self._serve(s) for s in self.servers))
        finally:
            stop.set()
            await printer
        if self.queue:
            self.say(f"no server left: {len(self.queue)} jobs not run (re-run the same command to resume)")

    def finished(self) -> bool:
        return not self.queue and not any(s.inflight for s in self.servers)

    async def _serve(self, s: Server) -> None:
        wake = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            listener = asyncio.create_task(self._listen(session, s, wake))
            try:
                while s.alive and not self.finished():
                    await self._submit(s)
                    await self._collect(s)
                    try:
                        await asyncio.wait_for(wake.wait(), self.poll)
                    except asyncio.TimeoutError:
                        pass
                    wake.clear()
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, session: aiohttp.ClientSession, s: Server, wake: asyncio.Event) -> None:
        """Progress and completion events of this client's prompts; reconnects while the server lives
        (/history polling in _collect covers anything missed while disconnected)."""
        ws_url = s.comfy.url.replace("http", "ws", 1) + f"/ws?clientId={s.client_id}"
        while s.alive:
            try:
                async with session.ws_connect(ws_url, heartbeat=10) as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue  # binary: preview images
                        event = msg.json()
                        kind, data = event.get("type"), event.get("data") or {}
                        if data.get("prompt_id") not in s.inflight:
                            continue
                        if kind == "progress":
                            s.step = f"{data.get('value')}/{data.get('max')}"
                        elif kind in DONE_EVENTS or (kind == "executing" and data.get("node") is None):
                            s.step = ""
                            wake.set()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                pass
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------------------ submit

    async def _submit(self, s: Server) -> None:
        if not self.queue:
            return
        try:
            if await asyncio.to_thread(s.comfy.pending) > 0:
                return  # something waits there already: keep the job for whichever server frees first
        except ServerError:
            return self._unanswered(s)
        s.last_ok = time.monotonic()
        if not self.queue:  # another server took the last one while we asked
            return
        job = self.queue.popleft()
        try:
            prompt = await asyncio.to_thread(self._prepare, s, job)
            prompt_id = await asyncio.to_thread(s.comfy.queue_prompt, prompt, s.client_id)
        except ServerError as e:
            if e.status is None:  # no answer: the job goes back first in line
                self.queue.appendleft(job)
                return self._unanswered(s)
            job.attempts += 1
            return self._failed_attempt(s, job, f"rejected by the server: {e}")
        job.attempts += 1
        s.started = s.started or time.monotonic()
        s.inflight[prompt_id] = job

    def _prepare(self, s: Server, job: Job) -> dict:
        """The job's prompt for this server (its photos uploaded there once)."""
        person, photos, identity = job.person, None, None
        if person is not None and person.kind == "photos":
            if person.name not in s.photos:
                s.photos[person.name] = [s.comfy.upload_image(p, photo_upload_name(person, p, file_digest(p)))
                                         for p in person.photos]
            photos = s.photos[person.name]
        elif person is not None:
            identity = s.identities[person.name]
        return bind(s.template, job.prompt, job.seed, photos=photos, identity=identity)

    # ----------------------------------------------------------------------------- collect

    async def _collect(self, s: Server) -> None:
        for prompt_id, job in list(s.inflight.items()):
            try:
                entry = await asyncio.to_thread(s.comfy.history, prompt_id)
            except ServerError:
                return self._unanswered(s)
            s.last_ok = time.monotonic()
            status = (entry or {}).get("status") or {}
            if not entry or status.get("status_str") not in ("success", "error"):
                continue
            del s.inflight[prompt_id]
            if status["status_str"] == "success":
                try:
                    await asyncio.to_thread(self._succeeded, s, job, prompt_id, entry)
                except ServerError as e:
                    if e.status is None:
                        self.queue.appendleft(job)
                        return self._unanswered(s)
                    self._failed_attempt(s, job, f"downloading the outputs failed: {e}")
            else:
                self._failed_attempt(s, job, execution_error(entry), prompt_id, execution_seconds(entry))

    def _succeeded(self, s: Server, job: Job, prompt_id: str, entry: dict) -> None:
        folder = self.out_dir / "images" / (job.person_name or "_")
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for image in self._output_images(entry):
            data = s.comfy.view(image)
            path = folder / f"{job.key}_{len(files)}{Path(image['filename']).suffix or '.png'}"
            path.write_bytes(data)
            files.append(path.relative_to(self.out_dir).as_posix())
        scores = []
        for nid in s.template.face_sim_nodes:
            for text in ((entry.get("outputs") or {}).get(nid) or {}).get("text") or []:
                scores += parse_scores(text)
        found = [v for v in scores if v is not None]
        record = self._record(job, manifest.DONE, s, prompt_id, execution_seconds(entry))
        record.update(outputs=files, score=max(found) if found else None, scores=scores)
        self.writer.append(record)
        self.done.append(record)
        s.done += 1

    @staticmethod
    def _output_images(entry: dict) -> list[dict]:
        out = []
        for node_out in (entry.get("outputs") or {}).values():
            out += [im for im in node_out.get("images") or [] if im.get("type") == "output"]
        return out

    def _failed_attempt(self, s: Server, job: Job, error: str, prompt_id: str | None = None,
                        seconds: float | None = None) -> None:
        job.failures += 1
        job.errors.append(f"{s.name}: {error}")
        if job.failures <= self.retries:
            self.say(f"job {job.person_name} / seed {job.seed} failed on {s.name} (attempt {job.attempts}), "
                     f"retrying: {error}")
            self.queue.append(job)
            return
        record = self._record(job, manifest.FAILED, s, prompt_id, seconds)
        record.update(outputs=[], score=None, scores=[], error=error)
        self.writer.append(record)
        self.failed.append(record)
        s.failed += 1
        self.say(f"job {job.person_name} / '{job.prompt[:40]}' / seed {job.seed} failed {job.failures} "
                 f"times: {error}")

    def _record(self, job: Job, status: str, s: Server, prompt_id: str | None, seconds: float | None) -> dict:
        return {"key": job.key, "status": status, "person": job.person_name, "prompt": job.prompt,
                "seed": job.seed, "server": s.name, "prompt_id": prompt_id, "error": None,
                "errors": list(job.errors), "attempts": job.attempts, "seconds": seconds,
                "run": self.run_id, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.extra}

    def _unanswered(self, s: Server) -> None:
        """No answer: after server_timeout without one, the server is out and its jobs go back."""
        if time.monotonic() - s.last_ok < self.server_timeout:
            return
        s.alive = False
        jobs = list(s.inflight.values())
        s.inflight.clear()
        self.queue.extendleft(reversed(jobs))
        self.say(f"{s.name} stopped answering: {len(jobs)} job(s) queued again on the other servers")

    # ---------------------------------------------------------------------------- progress

    def status_line(self) -> str:
        per = "  ".join(f"{s.name} {'x' if not s.alive else f'{s.rate():.1f}/min'}"
                        f"{' step ' + s.step if s.step else ''}" for s in self.servers)
        running = sum(len(s.inflight) for s in self.servers)
        n = len(self.done) + len(self.failed)
        width = 24
        bar = "#" * (width * n // max(1, self.total))
        return (f"[{bar:<{width}}] {n}/{self.total} done {len(self.done)} failed {len(self.failed)} "
                f"running {running} | {per}")

    def say(self, text: str) -> None:
        if self._tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    async def _progress(self, stop: asyncio.Event) -> None:
        """A live line on a terminal; a line per change (at most every 5 s) in a log."""
        last_print = 0.0
        while True:
            line = self.status_line()
            now = time.monotonic()
            if self._tty:
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
            elif line != self._last_line and now - last_print >= 5.0 or stop.is_set():
                self.stream.write(line + "\n")
                self.stream.flush()
                last_print = now
            self._last_line = line
            if stop.is_set():
                if self._tty:
                    self.stream.write("\n")
                return
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
