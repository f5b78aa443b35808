"""Every benchmark's command line: its defaults are its Options', and every one finds
the servers the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bench import audit, enumeration, oidc, options, procedures, steps

BENCHES: dict[str, tuple[Callable[[Sequence[str] | None], Any], type]] = {
    "audit": (audit.parse_args, audit.Options),
    "enumeration": (enumeration.parse_args, enumeration.Options),
    "oidc": (oidc.parse_args, oidc.Options),
    "procedures": (procedures.parse_args, procedures.Options),
    "steps": (steps.parse_args, steps.Options),
}
SERVER_ENV = ("BENCH_ADMIN_URL", "DATABASE_URL", "REDIS_URL")


@pytest.fixture
def no_server_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_no_flags_give_the_options_defaults(name: str,
                                            no_server_env: pytest.MonkeyPatch) -> None:
    parse, cls = BENCHES[name]
    assert parse([]) == cls()


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_the_scratch_database_and_redis_are_found_alike(
        name: str, no_server_env: pytest.MonkeyPatch) -> None:
    parse, cls = BENCHES[name]
    has_redis = "redis_url" in {f.name for f in dataclasses.fields(cls)}
    no_server_env.setenv("DATABASE_URL", "postgresql://db/x")
    no_server_env.setenv("REDIS_URL", "redis://cache/1")
    opts = parse([])
    assert opts.admin_url == "postgresql://db/x"
    assert not has_redis or opts.redis_url == "redis://cache/1"
    no_server_env.setenv("BENCH_ADMIN_URL", "postgresql://bench/y")
    assert parse([]).admin_url == "postgresql://bench/y"
    flags = ["--admin-url", "postgresql://flag/z"]
    if has_redis:
        flags += ["--redis-url", "redis://flag/2"]
    opts = parse(flags)
    assert opts.admin_url == "postgresql://flag/z"
    assert not has_redis or opts.redis_url == "redis://flag/2"


def test_a_flag_has_its_fields_name_and_type() -> None:
    @dataclasses.dataclass
    class Opts:
        rate_per_s: float = 1.5
        count: int = 3
        mode: str = "a"
        out: str | None = None
        untouched: int = 7

    p = options.parser("bench.example", "An example.")
    d = Opts()
    options.flag(p, d, "rate_per_s")
    options.flag(p, d, "count")
    options.flag(p, d, "mode", choices=("a", "b"))
    options.flag(p, d, "out")
    assert options.parsed(Opts, p, []) == d
    got = options.parsed(Opts, p, ["--rate-per-s", "2", "--count", "4", "--mode", "b",
                                   "--out", "f.txt"])
    assert got == Opts(rate_per_s=2.0, count=4, mode="b", out="f.txt")
    assert isinstance(got.rate_per_s, float)
    with pytest.raises(SystemExit):
        options.parsed(Opts, p, ["--count", "many"])
    with pytest.raises(SystemExit):
        options.parsed(Opts, p, ["--mode", "c"])
    with pytest.raises(SystemExit):
        options.parsed(Opts, p, ["--untouched", "8"])
