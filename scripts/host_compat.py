"""Construct ComfyUI host objects the way the running host's own `main.py` does (development tools,
the demo, the test harness and the benchmarks; the pack itself never builds a PromptExecutor).

PromptExecutor's cache arguments changed across versions:
  0.3.52            PromptExecutor(server, cache_type=..., cache_size=N)
  0.3.6x .. 0.3.75  PromptExecutor(server, cache_type=..., cache_args={"lru": N, "ram": R})
  0.33              ... cache_args={"lru": N, "ram": R, "ram_inactive": I}   (KeyError without it)
Rather than keeping a table of versions, read the keys the host's `main.py` passes and give each
one a value: `lru` is the LRU size asked for, every RAM headroom is 0 (no RAM-pressure eviction).
"""
from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

_CACHE_ARGS = re.compile(r"cache_args\s*=\s*\{(?P<body>[^}]*)\}")
_KEY = re.compile(r"""["'](\w+)["']\s*:""")
# Keys every host with `cache_args` reads; used when main.py cannot be read (a packaged host).
_FALLBACK_KEYS = ("lru", "ram")


def host_cache_arg_keys(host_root: Path | None = None) -> tuple[str, ...]:
    """The `cache_args` keys the host's main.py passes to PromptExecutor, in order."""
    main = (host_root or _host_root()) / "main.py"
    try:
        text = main.read_text(encoding="utf-8")
    except OSError:
        return _FALLBACK_KEYS
    m = _CACHE_ARGS.search(text)
    keys = tuple(_KEY.findall(m.group("body"))) if m else ()
    return keys or _FALLBACK_KEYS


def _host_root() -> Path:
    """The folder of the ComfyUI whose `execution` module is imported."""
    execution = sys.modules.get("execution")
    if execution is None or not getattr(execution, "__file__", None):
        raise RuntimeError("import ComfyUI's `execution` module before building a PromptExecutor")
    return Path(execution.__file__).resolve().parent


def make_prompt_executor(server, cache_type=None, lru_size: int = 0):
    """A PromptExecutor for this host. `cache_type` defaults to CLASSIC (every node re-runs only
    when its inputs change, as a server started with --cache-classic)."""
    import execution

    cache_type = execution.CacheType.CLASSIC if cache_type is None else cache_type
    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:
        args = {key: (lru_size if key == "lru" else 0) for key in host_cache_arg_keys()}
        return execution.PromptExecutor(server, cache_type=cache_type, cache_args=args)
    return execution.PromptExecutor(server, cache_type=cache_type, cache_size=lru_size)
