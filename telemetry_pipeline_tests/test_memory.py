"""The process's memory settings, made when the package is imported."""

import os
import subprocess
import sys
import textwrap
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


def _in_a_new_process(code: str, **environment: str) -> str:
    env = {name: value for name, value in os.environ.items() if name != "MIMALLOC_PURGE_DELAY"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**env, **environment},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# The allocator setting, the allocator, and how many pages a 64 MB Arrow buffer faults in when it
# is touched, freed, allocated and touched again (none when the allocator kept the memory).
_FAULTS_OF_A_REUSED_BUFFER = """
    import ctypes, os, resource, time
    import telemetry_pipeline
    import pyarrow as pa

    def touched(size):
        buffer = pa.allocate_buffer(size)
        ctypes.memset(buffer.address, 1, size)
        return buffer

    touched(64 << 20)
    time.sleep(0.05)
    for _ in range(3):
        touched(4096)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touched(64 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(os.environ["MIMALLOC_PURGE_DELAY"], pa.default_memory_pool().backend_name, faults)
"""


def test_importing_the_package_first_keeps_the_memory_arrow_frees():
    setting, allocator, faults = _in_a_new_process(_FAULTS_OF_A_REUSED_BUFFER).split()
    assert setting == "-1"
    if allocator != "mimalloc":
        pytest.skip(f"pyarrow allocates with {allocator} here")
    assert int(faults) < 1000
    # The allocator reads the setting: told to hand memory back at once, it faults every page again.
    setting, _, faults = _in_a_new_process(_FAULTS_OF_A_REUSED_BUFFER, MIMALLOC_PURGE_DELAY="0").split()
    assert setting == "0" and int(faults) >= (64 << 20) // 4096


def test_the_allocator_setting_is_left_as_the_environment_has_it_or_as_pyarrow_loaded_it():
    assert _in_a_new_process("import telemetry_pipeline, os; print(os.environ['MIMALLOC_PURGE_DELAY'])",
                             MIMALLOC_PURGE_DELAY="100") == "100"
    # pyarrow loaded first: too late to change, and the package says so.
    assert _in_a_new_process("import pyarrow, telemetry_pipeline.memory as m; print(m.keeping_freed_memory())") \
        == "False"
