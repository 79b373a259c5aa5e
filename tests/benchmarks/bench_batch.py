"""Batch throughput: jobs per minute of scripts/photomaker_batch.py with one vs two local ComfyUI
servers on the tiny models (tests/support/batch_env.py), and the ratio.

  python tests/benchmarks/bench_batch.py [--seeds 4] [--steps 4] [--size 64] [--repeats 2]

Each phase runs the command (a subprocess, as a user does) over 2 people x 3 prompts x `seeds`
seeds; phases alternate (1, 2, 1, 2...) and the median is reported. Every phase uses its own seeds,
because a server answers a prompt it has run before from its cache. A warm-up batch on each server
first loads the models, so the figures are steady-state throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, load_note
from support import batch_env, workflow_env

PEOPLE = {"alice": ["RED"], "bob": ["GREEN", "GREEN"]}
PROMPTS = ["a photo of a man img", "a photo of a man img, smiling", "portrait of a man img, studio light"]
WORKFLOW = workflow_env.REPO / "workflows" / "06-photomaker-rank-seeds.json"


def run_phase(root: Path, servers, seeds: list[int], steps: int, size: int) -> tuple[float, float]:
    """(seconds the command took for len(PEOPLE) x len(PROMPTS) x len(seeds) jobs, share of that
    time the servers spent executing: the manifest's per-job server seconds over elapsed x servers)."""
    out = Path(tempfile.mkdtemp(dir=root, prefix="out-"))
    args = ["--workflow", WORKFLOW, "--people", root / "people", "--prompts", root / "prompts.txt",
            "--seeds", f"{seeds[0]}-{seeds[-1]}", "--out", out,
            "--set", f"Empty Latent Image.width={size}", "--set", f"Empty Latent Image.height={size}",
            "--set", "Empty Latent Image.batch_size=1", "--set", f"KSampler.steps={steps}"]
    for s in servers:
        args += ["--server", s.url]
    t0 = time.perf_counter()
    res = batch_env.run_batch(*args)
    elapsed = time.perf_counter() - t0
    jobs = len(PEOPLE) * len(PROMPTS) * len(seeds)
    if res.returncode != 0 or not re.search(rf"totals: {jobs}/{jobs} done", res.stderr):
        raise RuntimeError(f"batch failed ({res.returncode}):\n{res.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return elapsed, sum(r["seconds"] or 0.0 for r in records) / (elapsed * len(servers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=4, help="seeds per phase (jobs = 6 x seeds)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-bench-batch-"))
    batch_env.write_people(root / "people", PEOPLE)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(batch_env.start_server(root / f"server-{name}"))
        next_seed = 1000
        for s in servers:  # warm-up: models loaded on both
            run_phase(root, [s], [next_seed], a.steps, a.size)
            next_seed += 1
        jobs = len(PEOPLE) * len(PROMPTS) * a.seeds
        times, busy = {1: [], 2: []}, {1: [], 2: []}
        for _ in range(a.repeats):
            for n in (1, 2):
                seeds = list(range(next_seed, next_seed + a.seeds))
                next_seed += a.seeds
                elapsed, share = run_phase(root, servers[:n], seeds, a.steps, a.size)
                times[n].append(elapsed)
                busy[n].append(share)
        rate = {n: 60.0 * jobs / statistics.median(t) for n, t in times.items()}
        ratio = rate[2] / rate[1]
        print(f"batch throughput, {jobs} jobs per phase ({a.size}x{a.size}, {a.steps} steps, tiny SDXL, "
              f"{os.cpu_count()} CPUs):")
        for n, label in ((1, "one server "), (2, "two servers")):
            print(f"  {label}: {rate[n]:6.1f} jobs/min  (runs {', '.join(f'{t:.1f}' for t in times[n])} s; "
                  f"servers executing {100 * statistics.median(busy[n]):.0f} % of the time)")
        print(f"  ratio two/one: {ratio:.2f}")
        emit({"bench": "batch", "jobs_per_phase": jobs, "steps": a.steps, "size": a.size,
              "jobs_per_min": {"1": round(rate[1], 2), "2": round(rate[2], 2)}, "ratio": round(ratio, 3),
              "times_s": {str(k): [round(t, 2) for t in v] for k, v in times.items()},
              "server_busy": {str(k): [round(b, 3) for b in v] for k, v in busy.items()},
              "load": load_note()})
    finally:
        for s in servers:
            s.cleanup()


if __name__ == "__main__":
    main()
