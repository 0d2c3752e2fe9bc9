"""Where the pipeline's files live: a leaf module (it imports nothing of the pipeline), so that the run-log filter
(tasks/runlog.py), which tasks/common.py installs, can find the log folder without importing tasks/common.py back."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pipeline_home() -> Path:
    """Prepared corpora, tokenizers and trained models: PIPELINE_HOME, else <repo>/runs (git-ignored)."""
    return Path(os.environ.get("PIPELINE_HOME") or REPO / "runs").resolve()
