"""The manifest: one JSON object per line, appended (and flushed to disk) as each job ends, so a
killed run loses at most the line being written. The last line of a job key wins."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"
DONE, FAILED = "done", "failed"


def job_key(person_name: str, person_digest: str, prompt: str, seed: int, workflow_digest: str,
            overrides: Iterable[str]) -> str:
    """Same person (name and files), prompt, seed, workflow and overrides -> same key."""
    payload = json.dumps([person_name, person_digest, prompt, int(seed), workflow_digest, sorted(overrides)])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def read(path: Path) -> dict[str, dict]:
    """{job key: its last record}; a torn last line (killed mid-write) is ignored."""
    records: dict[str, dict] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "key" in rec:
            records[rec["key"]] = rec
    return records


class Writer:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A torn line from a killed run would glue onto the next record: start on a fresh line.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                self._write("\n")

    def _write(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        self._write(json.dumps(record, ensure_ascii=False) + "\n")
