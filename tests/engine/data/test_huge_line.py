"""One enormous line (100 MB, no line break) trains with bounded memory."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import OWN_PEAK_MB, ROOT, sample_lines, tiny_args

pytestmark = pytest.mark.slow


# The training process's own peak and its workers', printed by the process itself. Not pytest's RUSAGE_CHILDREN:
# that is the largest of every child the session has waited for, so it would measure whatever ran before this test.
TRAIN_AND_REPORT_PEAK = """
import json, resource, sys
from lmcore.__main__ import main
rc = main(["train", "--spec", sys.argv[1]])
peak = OWN_PEAK_MB
print(json.dumps({"rc": rc, "self_mb": round(peak), "children_mb": round(
    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}))
""".replace("OWN_PEAK_MB", OWN_PEAK_MB)


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
    proc = subprocess.run([sys.executable, "-c", TRAIN_AND_REPORT_PEAK, str(spec)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"peak RSS {peak}")
    assert peak["rc"] == 0 and 0 < peak["self_mb"] < 2048 and peak["children_mb"] < 2048
    meta = json.loads(next((tmp_path / "cache" / "features").glob("*/meta.json")).read_text())
    assert meta["bytes"] == huge.stat().st_size and meta["num_tokens"] > 10_000_000
