"""What the benchmarks' command lines share: the servers they reach and the way an
``Options`` dataclass becomes flags and back.

Each benchmark keeps its own ``Options`` (the defaults, which the tests call it with) and
names the flags it offers; a flag is its field's name with dashes, of its default's
type, and defaults to it. Where a scratch database may be created is, for every one of
them alike, ``--admin-url``, else ``BENCH_ADMIN_URL``, else ``DATABASE_URL``, else the
local PostgreSQL; Redis is ``--redis-url``, else ``REDIS_URL``, else the local one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

T = TypeVar("T")


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, its docstring as the description."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def flag(p: argparse.ArgumentParser, defaults: Any, name: str, help: str | None = None,
         **kw: Any) -> None:
    """``--name-with-dashes`` for the field ``name`` of ``defaults``: of its default's
    type (a number; text otherwise), defaulting to it."""
    value = getattr(defaults, name)
    kw.setdefault("default", value)
    if "choices" not in kw and isinstance(value, int | float) and not isinstance(value, bool):
        kw.setdefault("type", type(value))
    p.add_argument("--" + name.replace("_", "-"), dest=name, help=help, **kw)


def servers(p: argparse.ArgumentParser, *, redis: bool = True) -> None:
    """``--admin-url`` and, unless ``redis`` is False, ``--redis-url``."""
    p.add_argument("--admin-url", default=admin_url(),
                   help="a PostgreSQL server where a scratch database may be created "
                        "(default: BENCH_ADMIN_URL, else DATABASE_URL, else the local one)")
    if redis:
        p.add_argument("--redis-url", default=redis_url(),
                       help="the Redis to use (default: REDIS_URL, else the local one)")


def admin_url() -> str:
    return os.environ.get("BENCH_ADMIN_URL") or os.environ.get("DATABASE_URL") \
        or DEFAULT_ADMIN_URL


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def parsed(cls: type[T], p: argparse.ArgumentParser, argv: Sequence[str] | None) -> T:
    """Parse ``argv``; the ``cls`` of every field that has a flag, the rest as default."""
    args = vars(p.parse_args(argv))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{name: value for name, value in args.items() if name in names})
