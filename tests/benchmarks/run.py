"""`make bench`: every CPU benchmark, one summary, results/latest.json + results/latest.md.

Each benchmark runs in its own subprocess (clean memory, one host per process) and prints one
BENCH_RESULT line; this script collects them, checks them against TARGETS (speed and memory) and
writes the files.
Timings are wall-clock medians over alternating repeats; process CPU-time medians are kept in the
JSON as well (steadier when other processes share the machine). Run it on a quiet machine.

  python tests/benchmarks/run.py                 # everything (about 10 min on 2 quiet cores)
  python tests/benchmarks/run.py --quick         # 1 repeat, fewer images: a smoke run
  python tests/benchmarks/run.py --only encode_v1,prompt_edit
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = {"encode_vs_hf": 0.8, "edit_1": 0.7, "edit_4": 0.3, "overhead": 0.10, "rss_growth": 1.2}


def plan(quick: bool, threads: int) -> dict[str, list[str]]:
    r = ["--repeats", "1" if quick else "3"]
    t = ["--threads", str(threads)] if threads else []
    imgs = "1,4" if quick else "1,4,10"
    return {
        "encode_v1": ["bench_encode.py", "--version", "v1", "--images", imgs, *r, *t],
        "encode_v2": ["bench_encode.py", "--version", "v2", "--images", imgs, "--sides", "ours,ours_bf16,hf",
                      *r, *t],
        "prompt_edit": ["bench_prompt_edit.py", "--images", "1,4", "--repeats", "2" if quick else "5",
                        "--two-pass", *t],
        "overhead": ["bench_overhead.py", "--repeats", "3" if quick else "9", *t],
        "memory_v1": ["bench_memory.py", "--version", "v1", "--images", "4"],
        "memory_v2": ["bench_memory.py", "--version", "v2", "--images", "4", "--sides", "ours,hf"],
    }


def run_one(name: str, argv: list[str]) -> dict:
    print(f"== {name}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(HERE / argv[0]), *argv[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=HERE.parents[1])
    result, err_tail = None, []
    import threading

    def pump_err():
        for line in proc.stderr:
            err_tail.append(line)
            del err_tail[:-200]
            if line.startswith("[bench]"):
                print("  " + line.rstrip(), flush=True)
    th = threading.Thread(target=pump_err, daemon=True)
    th.start()
    for line in proc.stdout:
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
    proc.wait()
    th.join()
    if proc.returncode != 0 or result is None:
        print(f"  FAILED (rc {proc.returncode}):\n" + "".join(err_tail[-40:]), flush=True)
        return {"error": f"rc {proc.returncode}", "stderr_tail": "".join(err_tail[-40:])}
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return result


def _mark(ok) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def summarise(res: dict) -> list[list[str]]:
    """Rows: comparison, this pack, other side, ratio, target, met."""
    rows = []
    for v in ("v1", "v2"):
        e = res.get(f"encode_{v}", {}).get("results")
        if not e:
            continue
        for n, row in e.items():
            o = row.get("ours")
            if o and "core" in row:
                rows.append([f"encode {v.upper()}, {n} image(s), s/image: ours vs core",
                             f"{o['per_image_s']:.2f}", f"{row['core']['per_image_s']:.2f}",
                             f"{o['ratio_vs_core']:.2f}x", "info", "-"])
            for side, label in (("ours", "ours (fp32, default)"),
                                ("ours_bf16", "ours, --bf16-text-enc (AMX bf16)")):
                s = row.get(side)
                if s and "hf" in row:
                    rows.append([f"encode {v.upper()}, {n} image(s), s/image: {label} vs transformers",
                                 f"{s['per_image_s']:.2f}", f"{row['hf']['per_image_s']:.2f}",
                                 f"{s['ratio_vs_hf']:.2f}x", f"<= {TARGETS['encode_vs_hf']}x",
                                 _mark(s["ratio_vs_hf"] <= TARGETS["encode_vs_hf"])])
    pe = res.get("prompt_edit", {}).get("results")
    if pe:
        for n, key in (("1", "edit_1"), ("4", "edit_4")):
            o, c = pe.get(f"ours_{n}"), pe.get(f"core_{n}")
            if o and c:
                rows.append([f"prompt edit, {n} ID image(s), s: ours vs core", f"{o['median_s']:.2f}",
                             f"{c['median_s']:.2f}", f"{o['ratio_vs_core']:.2f}x", f"<= {TARGETS[key]}x",
                             _mark(o["ratio_vs_core"] <= TARGETS[key])])
        t = pe.get("ours_1_twopass")
        if t and "ours_1" in pe:
            rows.append(["prompt edit, 1 ID image, s: one CLIP pass (now) vs two passes (before)",
                         f"{pe['ours_1']['median_s']:.2f}", f"{t['median_s']:.2f}",
                         f"{pe['ours_1']['median_s'] / t['median_s']:.2f}x", "info", "-"])
    ov = res.get("overhead")
    if ov and "results" in ov:
        w, wo = ov["results"]["with"], ov["results"]["without"]
        rows.append([f"end-to-end warm tiny graph ({ov['steps']} steps, {ov['size']} px), "
                     f"s: with vs without PhotoMaker",
                     f"{w['median_s']:.3f}", f"{wo['median_s']:.3f}", f"{100 * ov['overhead']:+.1f}%",
                     f"< {100 * TARGETS['overhead']:.0f}%", _mark(ov["overhead"] < TARGETS["overhead"])])
    for v in ("v1", "v2"):
        m = res.get(f"memory_{v}", {}).get("results")
        if not m:
            continue
        o = m.get("ours")
        others = ", ".join(f"{k} {r['load']['peak']:.0f} ({r['load']['growth_x']:.2f}x)" for k, r in m.items()
                           if k != "ours" and "load" in r)
        if o and "load" in o:
            rows.append([f"peak RSS {v.upper()} load, MiB (anon growth / encoder size)",
                         f"{o['load']['peak']:.0f} ({o['load']['growth_x']:.2f}x)", others,
                         f"{o['load']['growth_x']:.2f}x", f"<= {TARGETS['rss_growth']}x",
                         _mark(o["load"]["growth_x"] <= TARGETS["rss_growth"])])
            rows.append([f"peak RSS {v.upper()} load + encode 4 images, MiB (anon growth)",
                         f"{o['peak']:.0f} ({o['growth_x']:.2f}x)",
                         ", ".join(f"{k} {r['peak']:.0f} ({r['growth_x']:.2f}x)" for k, r in m.items()
                                   if k != "ours" and "peak" in r),
                         f"{o['growth_x']:.2f}x", "info", "-"])
    return rows


def markdown(res: dict, rows: list[list[str]]) -> str:
    meta = res["meta"]
    out = [f"# Benchmarks ({meta['date']})", "",
           f"CPU: {meta['cpu']} ({meta['cpus']} cores, torch {meta['torch']}, {meta['threads']} threads); "
           f"load average before/after: {meta['load_before']} / {meta['load_after']}. "
           f"Command: `{meta['command']}`. Full numbers: `latest.json`. Side definitions: the docstrings of "
           f"`tests/benchmarks/bench_*.py`.", "",
           "| comparison | this pack | other | ratio | target | |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    for m in meta.get("merged", []):
        out += ["", f"Re-measured {m['date']} and merged in: `{m['command']}`."]
    loads = {k: v["measured"]["load_after"][0] for k, v in res.items()
             if isinstance(v, dict) and isinstance(v.get("measured"), dict)}
    if loads:
        out += ["", "Load average (1 min) when each benchmark ended: " +
                ", ".join(f"{k} {v}" for k, v in loads.items()) +
                f" (on {meta['cpus']} cores; this run's own processes count too)."]
    busy = [meta["load_before"][0], meta["load_after"][0], *loads.values()]
    if max(busy) > 1.5 * meta["cpus"]:
        out += ["", "**Measured under load** (other processes were running): wall-clock figures are noisy; "
                    "`latest.json` also has CPU-time medians. Re-run `make bench` on a quiet machine."]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--merge", action="store_true",
                    help="update the entries run in an existing latest.json (with --only) "
                         "instead of replacing it")
    ap.add_argument("--render", action="store_true", help="only re-write latest.md from latest.json")
    a = ap.parse_args(argv)
    if a.render:
        res = json.loads((Path(a.out) / "latest.json").read_text())
        md = markdown(res, summarise(res))
        (Path(a.out) / "latest.md").write_text(md)
        print(md)
        return 0
    import torch

    jobs = plan(a.quick, a.threads)
    if a.only:
        jobs = {k: v for k, v in jobs.items() if k in a.only.split(",")}
    res = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "cpu": _cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": a.threads or torch.get_num_threads(), "python": platform.python_version(),
                    "load_before": [round(x, 2) for x in os.getloadavg()],
                    "command": "python tests/benchmarks/run.py "
                               + " ".join(argv if argv is not None else sys.argv[1:])}}
    for name, argv_ in jobs.items():
        res[name] = run_one(name, argv_)
        res[name]["measured"] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                                 "load_after": [round(x, 2) for x in os.getloadavg()]}
    res["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    old_file = Path(a.out) / "latest.json"
    if a.merge and old_file.exists():
        merged = json.loads(old_file.read_text())
        merged.update({k: v for k, v in res.items() if k != "meta"})
        merged.setdefault("meta", res["meta"])["merged"] = merged["meta"].get("merged", []) + [res["meta"]]
        res = merged
    rows = summarise(res)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res, rows)
    (out / "latest.md").write_text(md)
    print("\n" + md)
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"benchmarks that failed: {failed}")
        return 1
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
