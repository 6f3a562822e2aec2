"""``import minigen`` leaves the C allocator alone; ``reuse_freed_memory`` is opt-in (issue 12 §4, issue 18 §1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

# Allocate and touch a 64 MiB array (above glibc's largest adaptive mmap threshold,
# 32 MiB), free it, and print how much the resident set shrank, in MiB: 64 when the
# block went back to the OS, about 0 when the allocator kept it for reuse.
PROBE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import minigen

    def resident_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))

    if sys.argv[1] == "call":
        assert minigen.backend.reuse_freed_memory()
    a = np.ones(16 * 2**20, dtype=np.float32)
    before = resident_mib()
    del a
    print(before - resident_mib())
    """
)


def rss_returned_on_free(mode: str, **env: str) -> float:
    environment = {k: v for k, v in os.environ.items() if k != "MINIGEN_REUSE_FREED_MEMORY"}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    return float(done.stdout.strip())


def test_import_leaves_the_allocator_alone():
    assert rss_returned_on_free("import") > 60  # glibc's default: the freed 64 MiB went back to the OS


def test_reuse_freed_memory_keeps_freed_blocks():
    assert rss_returned_on_free("call") < 4


def test_environment_variable_opts_in():
    assert rss_returned_on_free("import", MINIGEN_REUSE_FREED_MEMORY="1") < 4
