"""The benchmarks' own requirements (requirements/bench.*) are part of what `make` installs (requirements/dev.txt)."""

from __future__ import annotations

import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"


def lines(name: str) -> list[str]:
    """The requirement lines of a file, without comments and blank lines."""
    found = (line.split("#", 1)[0].strip() for line in (REQUIREMENTS / name).read_text().splitlines())
    return [line for line in found if line]


def pins(name: str) -> dict[str, str]:
    """Package (normalised as pip compares names) -> pinned version."""
    out: dict[str, str] = {}
    for line in lines(name):
        if not line.startswith("-"):
            package, _, version = line.partition("==")
            out[normalised(package)] = version
    return out


def normalised(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def test_dev_in_includes_bench_in_and_bench_txt_pins_every_package_it_names() -> None:
    assert "-r bench.in" in lines("dev.in")
    assert {normalised(package) for package in lines("bench.in")} <= set(pins("bench.txt"))


def test_bench_txt_pins_the_versions_dev_txt_installs() -> None:
    bench = pins("bench.txt")
    dev = pins("dev.txt")
    assert bench
    assert {package: dev.get(package) for package in bench} == bench
