"""The process's memory settings, made when the package is imported."""

import sys
from pathlib import Path

import pytest

from telemetry_pipeline import memory  # importing the package is what turns them on


def _thp_enabled() -> str | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split(":")[1].strip()
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux process setting")
def test_importing_the_package_turns_transparent_huge_pages_off():
    if _thp_enabled() is None:
        pytest.skip("this kernel does not report THP_enabled")
    assert _thp_enabled() == "0"
    assert memory.without_transparent_huge_pages() is True  # and asking again is harmless
