"""The run spec both sides of a launch share, and a corpus read for hashing once per run."""

import json
import os

import pytest

from lmcore import ArgsError
from lmcore.data import corpus
from lmcore.__main__ import parse
from lmcore.spec import RunSpec


def test_a_spec_round_trips_and_an_unknown_field_is_named(tmp_path):
    spec = RunSpec(model_type="bert", train_files=["a.txt"], args={"max_steps": 3}, result_file="r.json")
    spec.save(tmp_path / "spec.json")
    assert RunSpec.load(tmp_path / "spec.json") == spec
    (tmp_path / "bad.json").write_text(json.dumps({"model_type": "bert", "trian_files": ["a.txt"]}))
    with pytest.raises(ArgsError, match="'trian_files'"):
        RunSpec.load(tmp_path / "bad.json")
    command, parsed = parse(["train", "--spec", str(tmp_path / "spec.json"), "--set", "max_steps=5"])
    assert command == "train" and parsed.args == {"max_steps": 5} and parsed.train_files == ["a.txt"]


def test_each_file_is_hashed_once_and_hashes_travel_to_other_processes(tmp_path, monkeypatch):
    f = tmp_path / "c.txt"
    f.write_text("some text\n" * 100)
    opened = []
    real_open = open

    def counting_open(path, *a, **kw):
        if str(path) == str(f):
            opened.append(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", counting_open)
    first = corpus.content_hash([f])
    assert corpus.content_hash([f]) == first and len(opened) == 1
    known = corpus.known_file_hashes([f])
    corpus._FILE_HASHES.clear()
    corpus.remember_file_hashes(known)  # what a launched process does with the spec's file_hashes
    assert corpus.content_hash([f]) == first and len(opened) == 1
    f.write_text("other text\n" * 100)  # a changed file is hashed again, never served from memory
    os.utime(f, ns=(1, 1))
    assert corpus.content_hash([f]) != first and len(opened) == 2


def test_final_eval_false_trains_with_evaluations_but_no_closing_one(tmp_path, corpus):
    from lmcore.__main__ import run
    from tests.conftest import tiny_args

    args = tiny_args("bert", tmp_path, max_steps=4, evaluate_during_training=True,
                     evaluate_during_training_steps=2, save_eval_checkpoints=False)
    spec = RunSpec(model_type="bert", train_files=[corpus["train"]], eval_files=[corpus["test"]], args=args,
                   final_eval=False)
    result = run("train", spec)
    assert result["global_step"] == 4 and "perplexity" not in result
    assert (tmp_path / "out-bert" / "training_progress_scores.csv").exists()


def test_help_answers_fast_without_torch_and_lists_every_model_type_with_its_objective():
    """`python -m lmcore --help` imports neither torch nor transformers (it took 8.5 s when it did)."""
    import subprocess
    import sys
    import time

    from lmcore.__main__ import OBJECTIVES
    from lmcore.models.registry import MODEL_TYPES

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lmcore", "--help"], capture_output=True,
                          text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert done.returncode == 0
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not {"torch", "transformers", "numpy"} & imported
    assert seconds < 5  # 0.05 s on the development machine; generous for a loaded CI runner
    assert set(OBJECTIVES) == set(MODEL_TYPES)
    for name, spec in MODEL_TYPES.items():
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(name + " "))
        assert ("causal" in line) == (spec.mlm_cls is None) and ("ELECTRA" in line) == (spec.family == "electra")
    assert "python -m flows.pretrain --help" in done.stdout
