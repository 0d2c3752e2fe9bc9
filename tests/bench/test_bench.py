"""The benchmark harness runs end to end: `python bench/run.py --quick` (tiny models, small corpora, never installs a
peer; the Simple Transformers and Trainer parts run only when their environments are already there)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_bench_runs_and_reports_figures(tmp_path):
    out = tmp_path / "bench.json"
    # About 2.5 minutes on 2 cores; the margin is for cores shared with other work.
    done = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads(out.read_text())
    s = r["sections"]
    assert set(s) == {"peak", "train", "data", "eval", "padding", "quality"}
    assert _positive(s["peak"]["fp32_gflops"]) and _positive(s["peak"]["bf16_gflops"])

    rows = s["train"]["rows"]
    assert {row["system"] for row in rows} >= {"lmcore", "lmcore-fp32", "lmcore-compile"}
    for row in rows:
        # Tiny models for a few steps: the per-step difference is noise, but every run must have happened.
        assert all(_positive(w) for walls in row["walls"].values() for w in walls)
        assert math.isfinite(row["per_step_s"]) and _positive(row["flops_per_token"])
        assert _positive(row["peak_rss_mb"])
        # What lmcore executes for MLM is less than the model FLOPs (only masked positions reach the vocabulary);
        # a peer executes about the model FLOPs.
        assert 0 < row["executed_flops_per_token"] <= row["flops_per_token"] * 1.01
        if row["system"] == "lmcore":
            assert row["executed_flops_per_token"] < 0.95 * row["flops_per_token"]
    compiled = next(row for row in rows if row["system"] == "lmcore-compile")
    assert _positive(compiled["compile_warmup_s"])

    data = s["data"]
    assert _positive(data["lmcore"]["mb_per_s"]) and _positive(data["lmcore"]["cached_s"])
    assert _positive(data["big"]["peak_rss_mb"]) and _positive(data["big"]["first_s"])
    assert all(_positive(row["tokens_per_s"]) for row in s["eval"]["rows"])
    assert 0 <= s["padding"]["lmcore_padding"] < 1 and 0 < s["padding"]["dynamic_padding"] < 1
    for row in s["quality"]["rows"]:
        assert _positive(row["default"]) and _positive(row["fp32"]) and math.isfinite(row["diff_pct"])
        assert len(row["default_runs"]) == len(row["fp32_runs"]) == len(row["seeds"]) >= 1

    # The printed report is the RESULTS.md text: a targets table and one table per section.
    for heading in ("## Targets", "## Matmul peak", "## Training", "## Data preparation", "## Evaluation",
                    "## line_by_line padding", "## Quality"):
        assert heading in done.stdout
    # --quick never writes the recorded results.
    recorded = ROOT / "bench" / "results.json"
    assert not recorded.exists() or not json.loads(recorded.read_text()).get("quick")


def _row(system, train_s, commit, date):
    return {"system": system, "setup": "BERT-MLM", "per_step_s": (train_s[1] - train_s[0]) / 10,
            "per_step_wall_s": 0.0, "tokens_per_s": 0.0, "peak_rss_mb": 100.0, "walls": {"2": [1.0], "12": [2.0]},
            "train_call_s": {"2": [train_s[0]], "12": [train_s[1]]},
            "measured": {"commit": commit, "date": date, "command": "python bench/run.py"}}


def _section(rows, commit, date, steps=(2, 12)):
    return {"steps": list(steps), "setups": ["s"], "rounds": 1, "rows": rows,
            "measured": {"commit": commit, "date": date, "command": "python bench/run.py"}}


def test_a_partial_train_rerun_keeps_the_peers_and_pools_only_the_same_engine():
    """bench/run.py's merge of a `--systems` re-run into the recorded train section: the peers' rows stay with
    their own provenance; a re-run row pools its runs with the recorded ones on the same engine commit only; a
    re-run that cannot be merged is refused rather than written over the recorded figures."""
    sys.path.insert(0, str(ROOT))
    from bench.run import merge_train_rounds

    old = _section([_row("lmcore", (5.0, 10.0), "aaa", "d1"), _row("trainer", (9.0, 20.0), "aaa", "d1")], "aaa",
                   "d1")
    same = _section([_row("lmcore", (4.0, 10.5), "aaa", "d2")], "aaa", "d2")
    merge_train_rounds(json.loads(json.dumps(old)), same, partial=True)
    assert [r["system"] for r in same["rows"]] == ["lmcore", "trainer"]
    trainer = same["rows"][1]
    assert trainer["measured"]["date"] == "d1" and trainer["per_step_s"] == pytest.approx(1.1)
    lm = same["rows"][0]
    assert lm["train_call_s"]["2"] == [5.0, 4.0] and lm["per_step_s"] == pytest.approx((10.0 - 4.0) / 10)

    other = _section([_row("lmcore", (4.0, 10.5), "bbb", "d2")], "bbb", "d2")
    merge_train_rounds(json.loads(json.dumps(old)), other, partial=True)
    assert [r["system"] for r in other["rows"]] == ["lmcore", "trainer"]
    assert other["rows"][0]["train_call_s"]["2"] == [4.0]  # another engine: not pooled
    assert other["rows"][0]["per_step_s"] == pytest.approx(0.65)

    with pytest.raises(SystemExit, match="--steps"):
        merge_train_rounds(json.loads(json.dumps(old)), _section([_row("lmcore", (4.0, 10.5), "aaa", "d2")], "aaa",
                                                                 "d2", steps=(2, 14)), partial=True)
    with pytest.raises(SystemExit):
        merge_train_rounds(json.loads(json.dumps(old)), json.loads(json.dumps(same)), same_machine=False,
                           partial=True)
