"""The sample workflows, copied once per test process (each pytest-xdist worker has its own copy).

A workflow runs in its file's folder: build-and-test.yaml writes dist/, artifacts.yaml out/. Two
workers running the same sample at once would write over each other's files (and the repository's
folder would collect them); in a copy of its own a worker's runs follow each other as in a serial
run. The copy sits under a short /tmp path: the 80-column tests see its paths whole.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copy() -> Path:
    base = Path(tempfile.mkdtemp(prefix="stepflow-samples-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    folder = base / "sample_workflows"
    shutil.copytree(ROOT / "sample_workflows", folder,
                    ignore=shutil.ignore_patterns("dist", "out", "__pycache__"))
    return folder


#: this process's copy of sample_workflows/
SAMPLES = _copy()
