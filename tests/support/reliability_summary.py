"""pytest plugin for the reliability and stress suites (tests/test_reliability.py, tests/test_stress.py).

* `STATS` collects the figures the suites report; `pytest_terminal_summary` prints them as one line:
  "reliability: files tried N / refused cleanly N, images tried N, prompts fuzzed N, long-run
  prompts completed N, memory growth X %, host crashes 0".
* Tests marked `stress` run only when selected (`make stress` = `pytest tests -m stress`); in any
  other run they are skipped, so `make test` stays fast.
* `PM_STRESS_SHORT=1` shrinks the stress suite to a CI-sized run (see `stress_size`).

Registered from tests/conftest.py through `pytest_plugins`.
"""
from __future__ import annotations

import os

import pytest

STATS: dict = {
    "files_tried": 0,
    "files_refused": 0,
    "images_tried": 0,
    "prompts_fuzzed": 0,
    "longrun_completed": 0,
    "memory_growth": [],  # percent, one entry per long run
    "host_crashes": 0,
    "fuzz_outcomes": {},  # "tokens-ok", "apply-error", ... -> count
    "notes": [],  # measured figures (timings, memory), one line each
    "touched": False,
}


def add(key: str, n: int = 1) -> None:
    STATS[key] += n
    STATS["touched"] = True


def note(line: str) -> None:
    """A measured figure for the end of the run (also printed where it was measured, for -s)."""
    STATS["notes"].append(line.strip())
    STATS["touched"] = True
    print("\n" + line.strip())


def outcome(name: str) -> None:
    STATS["fuzz_outcomes"][name] = STATS["fuzz_outcomes"].get(name, 0) + 1


def record_memory_growth(percent: float) -> None:
    STATS["memory_growth"].append(float(percent))
    STATS["touched"] = True


def stress_short() -> bool:
    return os.environ.get("PM_STRESS_SHORT", "").strip() not in ("", "0", "false", "no")


def stress_size(full: int, short: int) -> int:
    """`full` in `make stress`, `short` with PM_STRESS_SHORT=1 (CI)."""
    return short if stress_short() else full


def summary_line() -> str:
    growth = STATS["memory_growth"]
    mem = f"{max(growth):.2f} %" if growth else "n/a"
    return (f"reliability: files tried {STATS['files_tried']} / refused cleanly {STATS['files_refused']}, "
            f"images tried {STATS['images_tried']}, prompts fuzzed {STATS['prompts_fuzzed']}, "
            f"long-run prompts completed {STATS['longrun_completed']}, memory growth {mem}, "
            f"host crashes {STATS['host_crashes']}")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("markexpr", "") or ""
    if "stress" in markexpr:
        return
    skip = pytest.mark.skip(reason="stress suite: run it with `make stress` (pytest -m stress)")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if STATS["touched"]:
        terminalreporter.write_sep("-", "reliability summary")
        terminalreporter.write_line(summary_line())
        for line in STATS["notes"]:
            terminalreporter.write_line("  " + line.replace("\n", "\n  "))
        if STATS["fuzz_outcomes"]:
            terminalreporter.write_line("fuzz outcomes: " + ", ".join(
                f"{k} {v}" for k, v in sorted(STATS["fuzz_outcomes"].items())))
