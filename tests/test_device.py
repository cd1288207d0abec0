"""Machine facts that benchmark records carry (mmsid.device)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from mmsid.device import cpu_description


def test_cpu_description_names_the_model_cores_simd_and_blas():
    d = cpu_description()
    assert f"{os.cpu_count()} cores" in d
    assert f"torch {torch.backends.cpu.get_cpu_capability()}" in d
    assert re.search(r"BLAS \w+", d)
    info = Path("/proc/cpuinfo")
    if info.exists():
        m = re.search(r"^model name\s*:\s*(.+)$", info.read_text(), re.MULTILINE)
        if m:
            assert d.startswith(m.group(1).strip() + ",")
