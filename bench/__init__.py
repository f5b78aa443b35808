"""Benchmarks: each prints one JSON object last (README, docs/operations.md)."""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "flows", "storage", "web")


def compile_project() -> None:
    """Compile the project's modules to bytecode, as an installed copy has them (pip
    compiles what it installs), before timing a command's whole run: where
    PYTHONDONTWRITEBYTECODE is set, each process of a source checkout would otherwise
    compile them again, about half of a flowctl command's start."""
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1, workers=0)
