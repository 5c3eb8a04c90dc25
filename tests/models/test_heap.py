"""The bounded CPU heap (models.runtime.bound_cpu_heap): freed tensors go back to the system."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from models.runtime import HEAP_ENV, bound_cpu_heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Two 16 MiB tensors, one after the other, each written and freed: what stays resident afterwards.
KEPT_AFTER_FREE = textwrap.dedent("""
    import torch
    from pathlib import Path
    from models.runtime import bound_cpu_heap
    def rss():
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
        return int(line.split()[1]) / 1024
    print(bound_cpu_heap())
    before = rss()
    for _ in range(2):
        t = torch.ones(4 * 2**20)  # 16 MiB
        del t
    print(rss() - before)
""")


def _kept_mb(env_value: str | None, **extra: str) -> tuple[str, float]:
    """In a fresh process (glibc's settings are process-wide and sticky): the threshold set, and the
    MiB left resident by the two freed tensors."""
    # nothing of the caller's allocator settings: a preloaded allocator or glibc tunables change what stays
    env = {k: v for k, v in os.environ.items()
           if k not in (HEAP_ENV, "LD_PRELOAD", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")} | extra
    if env_value is not None:
        env[HEAP_ENV] = env_value
    out = subprocess.run([sys.executable, "-c", KEPT_AFTER_FREE], env=env, capture_output=True, text=True, check=True)
    threshold, kept = out.stdout.split()
    return threshold, float(kept)


@glibc
def test_with_the_heap_bounded_a_freed_tensor_leaves_nothing_resident_and_with_glibcs_own_it_stays():
    # glibc's own (the default): its threshold rose to 16 MiB when the first tensor was freed, so the
    # second came from the heap and stays resident
    threshold, kept = _kept_mb(None)
    assert threshold == "None" and kept > 12
    threshold, kept = _kept_mb("4")  # bounded: both tensors mapped, and unmapped when freed
    assert threshold == str(4 * 2**20) and kept < 4
    assert _kept_mb("8")[0] == str(8 * 2**20)
    # the user's own choice for glibc (read at start-up) wins
    assert _kept_mb("4", MALLOC_MMAP_THRESHOLD_=str(64 * 2**20))[0] == "None"


def test_a_bad_heap_setting_names_the_variable_and_what_it_expects(monkeypatch):
    for bad in ("lots", "-1", "inf", "4096"):  # 4096 MiB would pass mallopt's int as 0 (everything mapped)
        monkeypatch.setenv(HEAP_ENV, bad)
        with pytest.raises(ValueError, match=rf"\$CLICKPROMPT_HEAP_MMAP_MB='{bad}': expected a number of MiB from 0"):
            bound_cpu_heap()
