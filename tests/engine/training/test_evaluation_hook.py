"""`on_evaluation`: a caller (a sweep) sees each evaluation during training and can stop the run there; the model
is saved as at any other end, every process stops at the same step, and a resumed run goes on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmcore import LanguageModelingModel
from lmcore.spec import RunSpec
from tests.conftest import ROOT, tiny_args



def _model(tmp_path, corpus, **overrides):
    args = tiny_args("bert", tmp_path, **{"max_steps": 40, "evaluate_during_training": True,
                                          "evaluate_during_training_steps": 5, "save_steps": 5, **overrides})
    return LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])


def test_an_answer_stops_training_at_that_evaluation_and_the_model_is_saved(tmp_path, corpus):
    seen = []

    def hook(step, result):
        seen.append((step, result["perplexity"]))
        return "behind the others" if step == 10 else None

    model = _model(tmp_path, corpus)
    step, scores = model.train_model(corpus["train"], eval_file=corpus["test"], on_evaluation=hook)
    assert step == 10 and [s for s, _ in seen] == [5, 10]
    assert model.training_details["stopped_by"] == "behind the others"
    assert scores["perplexity"] == [p for _, p in seen]  # the hook saw what the run reports
    out = Path(model.args.output_dir)
    assert (out / "config.json").exists() and (out / "checkpoint-10").is_dir()
    assert not (out / "checkpoint-15").exists()
    # Resuming the stopped run goes on to the end: the stop is not part of the saved state.
    again = LanguageModelingModel("bert", None, args={**model.args.to_dict(), "resume_from_checkpoint": "latest"},
                                  train_files=corpus["train"])
    step, _ = again.train_model(corpus["train"], eval_file=corpus["test"])
    assert step == 40 and again.training_details["stopped_by"] is None


@pytest.mark.slow
def test_under_torchrun_the_hook_runs_once_and_every_process_stops_with_it(tmp_path, corpus):
    record = tmp_path / "calls.jsonl"
    args = tiny_args("bert", tmp_path, max_steps=40, evaluate_during_training=True,
                     evaluate_during_training_steps=5, save_steps=-1, logging_steps=5)
    spec = RunSpec(model_type="bert", train_files=[corpus["train"]], eval_files=[corpus["test"]], args=args,
                   result_file=str(tmp_path / "result.json"), final_eval=False,
                   on_evaluation={"hook": "tests.evaluation_hooks:stop_from",
                                  "kwargs": {"record": str(record), "step": 15}})
    spec.save(tmp_path / "spec.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lmcore",
           "train", "--spec", str(tmp_path / "spec.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["step"] for c in calls] == [5, 10, 15]  # the main process alone asked, once per evaluation
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["global_step"] == 15 and result["stopped_by"] == "step 15 reached 15"


def test_a_hook_that_cannot_be_imported_is_bad_input(tmp_path, corpus):
    spec = RunSpec(model_type="bert", train_files=[corpus["train"]], args=tiny_args("bert", tmp_path, max_steps=2),
                   on_evaluation={"hook": "tests.no_such_module:hook"})
    spec.save(tmp_path / "spec.json")
    proc = subprocess.run([sys.executable, "-m", "lmcore", "train", "--spec", str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "on_evaluation: cannot import 'tests.no_such_module:hook'" in proc.stderr


def test_a_failing_hook_or_an_answer_at_the_last_step_does_not_stop_the_run(tmp_path, corpus):
    def broken(step, result):
        raise ConnectionError("the sweep's store is away")

    model = _model(tmp_path, corpus, max_steps=10)
    step, _ = model.train_model(corpus["train"], eval_file=corpus["test"], on_evaluation=broken)
    assert step == 10 and model.training_details["stopped_by"] is None  # advice that failed: training went on

    seen = []
    model = _model(tmp_path / "b", corpus, max_steps=10)
    step, _ = model.train_model(corpus["train"], eval_file=corpus["test"],
                                on_evaluation=lambda s, r: seen.append(s) or "behind")
    # Told at step 5 and stopped there; a run that reaches its last step has finished, whatever the hook says.
    assert step == 5 and seen == [5]
    model = _model(tmp_path / "c", corpus, max_steps=5)
    step, _ = model.train_model(corpus["train"], eval_file=corpus["test"], on_evaluation=lambda s, r: "behind")
    assert step == 5 and model.training_details["stopped_by"] is None
