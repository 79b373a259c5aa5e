"""The detailer's benchmarks stay runnable: gpu_detailer.py's CPU smoke run and likeness.py end to
end on tiny models (numbers meaningless; the plumbing and the report format are what is checked)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "benchmarks"


def _run(script, tmp_path, *args):
    from support.host import host_path

    env = {**os.environ, "COMFYUI_PATH": str(host_path()), "OMP_NUM_THREADS": "2", "OUT": ""}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_gpu_detailer_cpu_tiny(tmp_path):
    proc = _run("gpu_detailer.py", tmp_path, "--cpu", "--tiny", "--faces", "1,3")
    out = json.loads((tmp_path / "gpu_detailer_tiny.json").read_text())
    assert set(out["results"]) == {"1", "3"}
    for n, r in out["results"].items():
        assert r["cold_s"] > 0 and len(r["warm_s"]) == 1
        assert r["per_face_s"] == pytest.approx(r["warm_median_s"] / int(n))
    assert out["marginal_s_per_face"] is not None and "s/face" in proc.stdout


@pytest.mark.slow
def test_likeness_tiny_end_to_end(tmp_path):
    proc = _run("likeness.py", tmp_path, "--tiny", "--cpu")
    data = json.loads((tmp_path / "likeness.json").read_text())
    methods = {"photos (leave-one-out)", "v1", "v1+detailer", "v2", "v2+detailer"}
    assert set(data["summary"]) == {"red", "green", "all"}
    for person in ("red", "green"):
        assert set(data["scores"][person]) == methods
        # two prompts x two seeds per generated method; the person's own photos match each other
        assert all(len(data["scores"][person][m]) == 4 for m in methods - {"photos (leave-one-out)"})
        assert data["summary"][person]["photos (leave-one-out)"]["mean"] > 0.99
    page = (tmp_path / "likeness.html").read_text()
    assert page.count("data:image/png;base64,") == 2 * 2 + 2 * 2 * 2 * 4  # photos + every generated image
    assert "TINY RANDOM MODELS" in proc.stdout and "v2+detailer" in proc.stdout
