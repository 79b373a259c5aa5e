"""Shared helpers for the CPU benchmarks (tests/benchmarks/bench_*.py, run by run.py).

Not collected by pytest (no test_* names). Every benchmark builds its own full-size inputs from
seeded generators (scripts/synthetic/pm_weights.py, tiny_sdxl.py): nothing is downloaded.
Generated weight files are cached in test-artifacts/bench/ (git-ignored) so repeated runs skip the
generation.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
ARTIFACTS = Path(os.environ.get("PM_BENCH_ARTIFACTS", REPO / "test-artifacts" / "bench"))
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # `support` (the test harness)
if str(REPO / "scripts") not in sys.path:
    sys.path.append(str(REPO / "scripts"))  # `synthetic` (tiny SDXL, PhotoMaker files)
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


# ------------------------------------------------------------------ host

def boot():
    """ComfyUI in-process on the CPU with this pack loaded (the test harness' boot)."""
    from support import host

    host.boot()
    host.load_pack()
    return host


def pack_module(name: str):
    """The pack's own copy of a submodule ("nodes.managed_encoder", 'photomaker_core.encoder'...)."""
    from support import host

    return host.pack_submodule(name)


# ------------------------------------------------------------------ weights

def photomaker_file(version: str, seed: int = 0, lora: str = "tiny") -> Path:
    """A full-size PhotoMaker file in the released container (nested .bin, mixed bf16/fp32 like the
    real files) with a LoRA for the `lora` geometry UNet. Cached by name."""
    from synthetic import pm_weights

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"photomaker-{version}-full-s{seed}-lora{lora}.bin"
    if not path.exists():
        t0 = time.perf_counter()
        enc = pm_weights.make_encoder_state_dict(version, "full", seed=seed)
        lo = pm_weights.make_lora_state_dict(lora, seed=seed)
        tmp = path.with_suffix(".tmp")
        pm_weights.write_nested_bin(tmp, enc, lo, mixed=True)
        tmp.rename(path)
        del enc, lo
        gc.collect()
        log(f"generated {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - t0:.1f} s")
    return path


def synthetic_photos(n: int, size: int = 512, seed: int = 0):
    """n distinct RGB 'photos' [n, size, size, 3] in [0, 1] (smooth gradients + noise: the content
    doesn't matter for timing, only the shape)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for i in range(n):
        base = torch.stack([xx * (0.3 + 0.1 * i % 5), yy, (xx + yy) / 2], dim=-1)
        imgs.append((base + 0.1 * torch.rand(size, size, 3, generator=g)).clamp(0, 1))
    return torch.stack(imgs)


# ------------------------------------------------------------------ timing

def alternate(sides: dict, repeats: int, warmup: int = 1, before_each=None,
              cpu: dict | None = None) -> dict[str, list[float]]:
    """Run the callables of `sides` in turn (A B C A B C ...), `warmup` untimed rounds first, then
    `repeats` timed rounds. Returns {name: [wall seconds...]}; if `cpu` is a dict it receives
    {name: [process CPU seconds...]} too (less sensitive to other processes on a shared machine).
    Alternating spreads background load over all sides instead of penalising whichever ran
    during a busy spell."""
    times = {name: [] for name in sides}
    if cpu is not None:
        cpu.update({name: [] for name in sides})
    for r in range(warmup + repeats):
        for name, fn in sides.items():
            if before_each is not None:
                before_each(name)
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            if r >= warmup:
                times[name].append(dt)
                if cpu is not None:
                    cpu[name].append(dc)
    return times


def summary(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "n": len(samples), "samples_s": [round(s, 4) for s in samples]}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ------------------------------------------------------------------ memory

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> dict:
    """Current resident memory of this process: total, anonymous (heap: tensors the process owns),
    file-backed (mapped files, e.g. an mmapped weight file: clean page cache the kernel can drop)."""
    return {"rss": _status_kb("VmRSS") / 1024, "anon": _status_kb("RssAnon") / 1024,
            "file": _status_kb("RssFile") / 1024}


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (getrusage ru_maxrss, KiB on Linux; = VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """Samples RssAnon every few ms in a thread: the peak of memory the process itself allocated
    (getrusage's peak also counts file pages mapped read-only from an mmapped weight file)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("RssAnon") / 1024)
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = _status_kb("RssAnon") / 1024
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("RssAnon") / 1024)


# ------------------------------------------------------------------ output

def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """Benchmarks print exactly one JSON line on stdout, prefixed, for run.py to collect."""
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def load_note() -> dict:
    """Machine load while measuring (the 1-minute load average against the core count)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        one = five = float("nan")
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2), "cpus": os.cpu_count(),
            "torch_threads": _threads()}


def _threads():
    import torch

    return torch.get_num_threads()
