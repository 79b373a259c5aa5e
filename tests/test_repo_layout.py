"""Repository layout rules: scripts/ stands on its own (it never reads, imports or copies anything from
tests/), no test file imports from another (shared code is in tests/support/), and no source file or
developer document cites an issue number or a document that is not in the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script_files() -> list[Path]:
    files = sorted((REPO / "scripts").rglob("*.py")) + sorted((REPO / "scripts").glob("*.sh"))
    return [f for f in files if "__pycache__" not in f.parts]


# What reaching into tests/ looks like in a script: a path below tests/ other than naming a test file
# or the pytest config (documentation such as "tests/test_ui.py writes them" is allowed), the folder
# as a path component in code ("tests" quoted, REPO / "tests"), an import of the test harness'
# `support` package, or tests/ put on sys.path.
SCRIPT_RULES = {
    "a path below tests/": re.compile(r"\btests/(?!test_\w+\.py\b|pytest\.ini\b)"),
    "tests/ as a path component": re.compile(r"""["']tests["']"""),
    "an import of the test harness": re.compile(r"^\s*(from|import)\s+(support|conftest|tests)\b", re.M),
    "tests/ on sys.path": re.compile(r"sys\.path\.(insert|append)\([^\n]*tests"),
}


def script_violations(text: str) -> list[str]:
    found = []
    for what, rule in SCRIPT_RULES.items():
        for m in rule.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"line {line}: {what}: {text.splitlines()[line - 1].strip()}")
    return found


def test_script_rules_catch_the_old_forms():
    """The rules find each way scripts/ used to reach into tests/ (and leave documentation alone)."""
    assert script_violations('    tests = str(REPO / "tests")\n')
    assert script_violations("    from support import fake_insightface, pm_weights, tiny_sdxl\n")
    assert script_violations("  cp tests/support/tv_cpu_shim.py \"$SP/_pm_tv_cpu_shim.py\"\n")
    assert script_violations("echo \"import sys; sys.path.insert(0, '$P/tests/benchmarks')\"\n")
    assert script_violations("sys.path.append(tests_dir)\n")
    assert not script_violations('help="folder with <workflow>.png (tests/test_ui.py writes them)"\n')
    assert not script_violations("    .venv/bin/python -m pytest -c tests/pytest.ini --rootdir=tests\n")


@pytest.mark.parametrize("path", _script_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_never_reach_into_tests(path):
    """scripts/ (the demo, its synthetic models, the host stand-ins, setup) works without tests/."""
    assert script_violations(path.read_text()) == [], path


def test_no_test_file_imports_another():
    """Helpers and fixtures two test files need live in tests/support/, not in either test file."""
    rule = re.compile(r"^\s*(from\s+test_\w+\s+import|import\s+test_\w+)", re.M)
    hits = [f"{p.name}: {m.group(0).strip()}" for p in sorted((REPO / "tests").glob("test_*.py"))
            for m in rule.finditer(p.read_text())]
    hits += [f"support/{p.name}: {m.group(0).strip()}"
             for p in sorted((REPO / "tests" / "support").glob("*.py")) for m in rule.finditer(p.read_text())]
    assert hits == []


# A citation of something the reader cannot open: an issue number, a section of a specification kept
# outside the repository, or the project's private notes.
CITATION = re.compile(r"spec (sections?|§)|\bsections? [0-9]|\bissues? #?[0-9]|shared/spec|peers\.md|"
                      r"photomaker\.md|\bthe spec\b|\bspec's\b|\bspec: [0-9]", re.IGNORECASE)


def _cited_files() -> list[Path]:
    skip = {".venv", ".cache", ".git", "__pycache__", "test-artifacts", ".gpu", "node_modules"}
    files = [f for f in REPO.rglob("*.py") if not skip & set(f.relative_to(REPO).parts)]
    files += [REPO / "CONTRIBUTING.md", REPO / "README.md", REPO / "SECURITY.md"]
    files += sorted((REPO / "docs").rglob("*.md")) + sorted((REPO / "web" / "docs").rglob("*.md"))
    return sorted(f for f in files if f.is_file() and f != Path(__file__).resolve())


def test_citation_rule_catches_the_old_forms():
    for text in ("PhotoMaker prompt handling, spec section 3", "the README is for users first (issue 13)",
                 "written from shared/spec/photomaker.md", "see peers.md", "the targets of issue 5",
                 "Counts the spec states for the released files (section 1, 2, 6)",
                 "an independent reference of the spec.", "# The spec's headless flags",
                 "norm ~ 22.6, spec: 20-30"):
        assert CITATION.search(text), text
    for text in ("tokenizer spec", "spec.start", "the README's sections", "spec.get(section) or {}",
                 "def _is_word(token: Any, spec: TokenizerSpec)", "read a spec and trigger ids"):
        assert not CITATION.search(text), text


def test_no_citations_of_issues_or_absent_documents():
    """Comments, docstrings and developer documents (*.py, README, CONTRIBUTING, SECURITY, docs/) state
    the fact itself, not the issue or outside document it came from."""
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in _cited_files()
            for n, line in enumerate(path.read_text().splitlines(), 1) if CITATION.search(line)]
    assert hits == []
