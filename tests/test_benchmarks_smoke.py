"""The benchmarks stay runnable (they live in tests/benchmarks/, outside the default collection):
gpu_bench.py's CPU dry run end to end, and run.py's summary/markdown on a result set."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_pm_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_gpu_bench_dry_run(tmp_path):
    from support.host import host_path

    env = {**os.environ, "COMFYUI_PATH": str(host_path()), "OMP_NUM_THREADS": "2", "OUT": ""}
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_dry_run_v1.json").read_text())
    assert set(out["results"]) == {"without", "with_1", "with_2"}
    for r in out["results"].values():
        assert r["cold_s"] > 0 and r["warm_median_s"] > 0 and "pm_share_warm" in r and "vram" in r
        assert r["cold_nodes_s"] and len(r["warm_s"]) == 1
    assert set(out["identity_encode_s"]) == {"1", "2"}
    assert "PM share" in proc.stdout


def test_run_summary_and_markdown():
    run = _load("run")
    res = {
        "meta": {"date": "d", "cpu": "c", "cpus": 2, "torch": "t", "threads": 2, "load_before": [0.1, 0, 0],
                 "load_after": [9.0, 0, 0], "command": "x"},
        "encode_v1": {"results": {"1": {"ours": {"per_image_s": 1.0, "ratio_vs_hf": 0.9,
                                                 "ratio_vs_core": 0.95},
                                        "ours_bf16": {"per_image_s": 0.3, "ratio_vs_hf": 0.3},
                                        "core": {"per_image_s": 1.05}, "hf": {"per_image_s": 1.1}}}},
        "prompt_edit": {"results": {"ours_1": {"median_s": 1.0, "ratio_vs_core": 0.5},
                                    "core_1": {"median_s": 2.0},
                                    "ours_4": {"median_s": 1.5, "ratio_vs_core": 0.35},
                                    "core_4": {"median_s": 4.3}}},
        "overhead": {"results": {"with": {"median_s": 1.02}, "without": {"median_s": 1.0}}, "overhead": 0.02,
                     "steps": 10, "size": 64},
        "memory_v1": {"results": {"ours": {"load": {"peak": 1800, "growth_x": 1.01}, "peak": 1800,
                                           "growth_x": 1.2},
                                  "core": {"load": {"peak": 1750, "growth_x": 1.94}, "peak": 1750,
                                           "growth_x": 1.94}}},
    }
    rows = run.summarise(res)
    text = " ".join(" ".join(r) for r in rows)
    assert "0.30x" in text and "MISSED" in text and "+2.0%" in text and "1.01x" in text
    md = run.markdown(res, rows)
    assert md.startswith("# Benchmarks") and "Measured under load" in md
