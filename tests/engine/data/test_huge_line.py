"""One enormous line (100 MB, no line break) trains with bounded memory."""

import json
import os
import resource
import subprocess
import sys

import pytest

from tests.conftest import ROOT, sample_lines, tiny_args

pytestmark = pytest.mark.slow


def test_a_100_mb_single_line_file_trains_under_2_gb(tmp_path, trained_dirs):
    huge = tmp_path / "one-line.txt"
    words = " ".join(sample_lines("train.txt", 2000)).encode()
    with open(huge, "wb") as f:
        while f.tell() < 100 * 2**20:
            f.write(words + b" ")
    assert huge.stat().st_size >= 100 * 2**20 and b"\n" not in huge.read_bytes()[:2**20]

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "model_type": "bert", "model_name": trained_dirs["bert"], "train_files": [str(huge)],
        "args": tiny_args("bert", tmp_path, max_steps=3)}))
    proc = subprocess.run([sys.executable, "-m", "lmcore", "train", "--spec", str(spec)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 2048
    meta = json.loads(next((tmp_path / "cache" / "features").glob("*/meta.json")).read_text())
    assert meta["bytes"] == huge.stat().st_size and meta["num_tokens"] > 10_000_000
