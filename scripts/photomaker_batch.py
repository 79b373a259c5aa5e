#!/usr/bin/env python3
"""Run a workflow over people x prompts x seeds on one or more ComfyUI servers.

    python scripts/photomaker_batch.py --workflow workflows/01-photomaker-v2-basic.json \\
        --people people/ --prompts prompts.txt --seeds 4 \\
        --server http://127.0.0.1:8188 --server http://gpu2:8188 \\
        --set KSampler.steps=30 --out runs/cast1

Everything goes through ComfyUI's own API (/object_info, /upload/image, /prompt, /queue, /ws,
/history, /view), so it drives any ComfyUI with this pack installed. Needs only the standard
library and aiohttp (a ComfyUI requirement): run it with the Python of any ComfyUI install.

Writes OUT/manifest.jsonl (one line per finished job), OUT/images/<person>/ and
OUT/contact_sheet.html. Re-running the same command skips the jobs the manifest records as done.
Exit codes: 0 all done, 1 some jobs failed or could not run, 2 bad input (nothing was queued).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # batch/ and workflow_api.py

from batch import dispatch, manifest, servers, sheet
from batch.errors import BatchInputError
from batch.inputs import load_people, load_prompts, parse_seeds
from batch.workflow import analyse, apply_overrides, check_prompts, read_workflow, to_api


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workflow", required=True, help="UI-format (saved/exported) or API-format workflow JSON")
    p.add_argument("--people",
                   help="folder: one subfolder of photos per person, or saved identity .safetensors files")
    p.add_argument("--prompts", required=True, help="text file, one prompt per line (with the trigger word)")
    p.add_argument("--seeds", default="1",
                   help="a count (4 = seeds 0..3), a range (1000-1003) or a list (7,42,1000); default 1")
    p.add_argument("--server", action="append", required=True, help="ComfyUI URL; repeat for several servers")
    p.add_argument("--set", action="append", default=[], metavar="NODE.WIDGET=VALUE",
                   help="override a widget on every node with that title or type, e.g. KSampler.steps=20")
    p.add_argument("--out", required=True, help="output folder (manifest, images, contact sheet)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed job (default 2)")
    p.add_argument("--server-timeout", type=float, default=15.0,
                   help="seconds without an answer before a server's jobs move to the others (default 15)")
    return p.parse_args(argv)


class Batch:
    """Everything checked and ready to queue."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        workflow = read_workflow(args.workflow)
        self.people = load_people(args.people)
        self.prompts = load_prompts(args.prompts)
        self.seeds = parse_seeds(args.seeds)
        if args.retries < 0:
            raise BatchInputError(f"--retries {args.retries}: must be 0 or more.")
        kinds = {p.kind for p in self.people}
        self.servers: list[dispatch.Server] = []
        object_infos = []
        for url in dict.fromkeys(args.server):
            comfy, object_info = servers.probe(url)
            api = apply_overrides(to_api(workflow, object_info, url), object_info, args.set)
            template = analyse(api, object_info, kinds, len(self.seeds))
            if any(len(p.photos) > 1 for p in self.people) and "ImageBatch" not in object_info:
                raise BatchInputError(f"--server {url}: it has no ImageBatch node to batch several photos.")
            self.servers.append(dispatch.Server(comfy, template))
            object_infos.append(object_info)
        check_prompts(self.servers[0].template, self.prompts, args.prompts)
        digest = hashlib.sha256(json.dumps(workflow, sort_keys=True).encode()).hexdigest()
        self.jobs = [dispatch.Job(manifest.job_key(p.name if p else "", p.digest if p else "", prompt, seed,
                                                   digest, args.set), p, prompt, seed)
                     for p in (self.people or [None]) for prompt in self.prompts for seed in self.seeds]
        self.out = Path(args.out)
        self.manifest_path = self.out / manifest.MANIFEST_NAME
        previous = manifest.read(self.manifest_path)
        done = {key for key, rec in previous.items() if rec.get("status") == manifest.DONE}
        self.skipped = [j for j in self.jobs if j.key in done]
        self.todo = [j for j in self.jobs if j.key not in done]
        # Last, as the only step that writes anything (a copy of an identity file on a local server).
        to_place = {j.person.name: j.person for j in self.todo if j.person and j.person.kind == "identity"}
        for s, object_info in zip(self.servers, object_infos, strict=True):
            for person in to_place.values():
                s.identities[person.name] = servers.place_identity(s.comfy, object_info, person)


def run(args: argparse.Namespace, stream=sys.stderr) -> int:
    try:
        batch = Batch(args)
    except BatchInputError as e:
        print(f"photomaker_batch: error: {e}", file=stream)
        return 2
    run_id = uuid.uuid4().hex[:8]
    print(f"photomaker_batch: {len(batch.jobs)} jobs ({len(batch.people) or 1} people x {len(batch.prompts)} "
          f"prompts x {len(batch.seeds)} seeds), {len(batch.skipped)} already done, {len(batch.todo)} to "
          f"run on {len(batch.servers)} server(s); run {run_id}", file=stream)
    writer = manifest.Writer(batch.manifest_path)
    d = dispatch.Dispatcher(batch.servers, batch.todo, writer, batch.out, args.retries, run_id,
                            {"workflow": Path(args.workflow).name}, server_timeout=args.server_timeout,
                            stream=stream)
    t0 = time.monotonic()
    if batch.todo:
        asyncio.run(d.run())
    elapsed = time.monotonic() - t0
    records = manifest.read(batch.manifest_path)
    ordered = [records[j.key] for j in batch.jobs if j.key in records]
    page = sheet.write(ordered, batch.out, f"PhotoMaker batch: {Path(args.workflow).name}")
    done = sum(r["status"] == manifest.DONE for r in ordered)
    print(f"totals: {done}/{len(batch.jobs)} done ({len(d.done)} this run, {len(batch.skipped)} skipped as "
          f"done before), {len(d.failed)} failed, {len(d.queue)} not run, {elapsed:.1f} s", file=stream)
    for s in batch.servers:
        print(f"  {s.name}: {s.done} done, {s.failed} failed, {s.rate():.2f} jobs/min"
              f"{'' if s.alive else ' (stopped answering)'}", file=stream)
    print(f"manifest: {batch.manifest_path}\ncontact sheet: {page}", file=stream)
    return 0 if done == len(batch.jobs) else 1


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
