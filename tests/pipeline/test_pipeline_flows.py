"""The flows against a real (test) Prefect server and a real sqlite MLflow store: caching, the champion/challenger
decision both ways with one perplexity per model in the logs, the nightly flow on an unchanged folder, and failing
runs ending FAILED in MLflow after one attempt. Slow (a Prefect server, several trainings): CI runs them."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.pipeline_support import SAMPLE, TINY, TINY_ELECTRA, child_runs, prefect_test_home, write_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A Prefect test server, and the MLflow store and pipeline folder of this module, all in a temporary folder."""
    with prefect_test_home(tmp_path_factory.mktemp("flows")) as tmp:
        yield tmp


def lines(n: int, start: int = 0) -> list[str]:
    return (SAMPLE / "train.txt").read_text().splitlines()[start:start + n]


@pytest.fixture(scope="module")
def prep_flow():
    """The pretrain flow's first two stages, called exactly as it calls them (the full flow's cache use is checked
    end to end in test_pipeline_e2e: its ELECTRA run gets the BERT run's prepared corpus from the cache)."""
    from prefect import flow

    from tasks.common import cached_call
    from tasks.corpus import corpus_ready, prepare_corpus
    from tasks.tokenizer import tokenizer_ready, train_tokenizer

    @flow
    def prepare_and_tokenize(corpus: str, refresh: bool = False) -> dict:
        prep, prep_cached = cached_call(prepare_corpus, refresh, corpus_ready, corpus=corpus)
        tok, tok_cached = cached_call(train_tokenizer, refresh, tokenizer_ready, train_file=prep["train_file"],
                                      corpus_key=prep["key"], model_type="bert", args=TINY)
        return {"corpus": prep, "tokenizer_dir": tok,
                "cached": {"prepare_corpus": prep_cached, "train_tokenizer": tok_cached}}

    return prepare_and_tokenize


def test_caching_skips_prep_and_tokenizer_until_the_corpus_changes(home, prep_flow):
    corpus = write_lines(home / "cache-corpus" / "c.txt", lines(1500))
    first = prep_flow(corpus=str(corpus))
    assert first["cached"] == {"prepare_corpus": False, "train_tokenizer": False}
    stamp = (home / "pipeline" / "corpora" / first["corpus"]["key"] / "train.txt").stat().st_mtime_ns

    again = prep_flow(corpus=str(corpus))
    assert again["cached"] == {"prepare_corpus": True, "train_tokenizer": True}
    assert again["corpus"]["dir"] == first["corpus"]["dir"] and again["tokenizer_dir"] == first["tokenizer_dir"]
    assert (home / "pipeline" / "corpora" / first["corpus"]["key"] / "train.txt").stat().st_mtime_ns == stamp

    write_lines(corpus, lines(1500) + lines(50, start=3000))
    changed = prep_flow(corpus=str(corpus))
    assert changed["cached"] == {"prepare_corpus": False, "train_tokenizer": False}
    assert changed["corpus"]["key"] != first["corpus"]["key"]

    # A cached result whose folder was deleted is recomputed, never handed back.
    shutil.rmtree(changed["corpus"]["dir"])
    shutil.rmtree(changed["tokenizer_dir"])
    rebuilt = prep_flow(corpus=str(corpus))
    assert rebuilt["cached"] == {"prepare_corpus": False, "train_tokenizer": False}
    assert (home / rebuilt["corpus"]["train_file"]).exists() and (home / rebuilt["tokenizer_dir"]).exists()
    assert prep_flow(corpus=str(corpus))["cached"] == {"prepare_corpus": True, "train_tokenizer": True}

    forced = prep_flow(corpus=str(corpus), refresh=True)
    assert forced["cached"] == {"prepare_corpus": False, "train_tokenizer": False}


def test_champion_moves_only_when_perplexity_improves_and_unchanged_folder_is_skipped(home):
    from flows.finetune import finetune
    from flows.pretrain import pretrain
    from tasks import tracking

    client = tracking.client()
    base = pretrain(corpus=str(write_lines(home / "base.txt", lines(1500))), args=TINY, register_as="lm-test",
                    experiment="champion")
    assert base["registered"]["version"] == "1"
    assert str(client.get_model_version_by_alias("lm-test", "champion").version) == "1"

    incoming = home / "incoming"
    write_lines(incoming / "day1.txt", lines(1500, start=1500))
    better = finetune(corpus_dir=str(incoming), register_as="lm-test",
                      args={"max_seq_length": 64, "max_steps": 40, "learning_rate": 1e-3, "save_steps": -1})
    assert better["trained"] and better["promoted"]
    assert better["challenger_perplexity"] < better["champion_perplexity"]
    assert str(client.get_model_version_by_alias("lm-test", "champion").version) == better["version"] == "2"
    run = client.get_run(better["mlflow_run_id"])
    assert run.data.tags["decision"] == "promoted"
    assert run.data.metrics["champion_perplexity"] == pytest.approx(better["champion_perplexity"])
    assert run.data.metrics["challenger_perplexity"] == pytest.approx(better["challenger_perplexity"])
    assert one_perplexity_per_model(run, better)

    nothing = finetune(corpus_dir=str(incoming), register_as="lm-test")
    assert nothing == {"mlflow_run_id": nothing["mlflow_run_id"], "trained": False,
                       "reason": "nothing new in corpus_dir"}
    assert len(client.search_model_versions("name='lm-test'")) == 2

    # A far too high learning rate wrecks the model: it is registered as the challenger, champion stays.
    worse = finetune(corpus_dir=str(incoming), register_as="lm-test", force=True,
                     args={"max_seq_length": 64, "max_steps": 6, "learning_rate": 1.0, "warmup_steps": 1,
                           "save_steps": -1})
    assert worse["trained"] and not worse["promoted"]
    assert worse["challenger_perplexity"] > worse["champion_perplexity"]
    assert str(client.get_model_version_by_alias("lm-test", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("lm-test", "challenger").version) == worse["version"] == "3"
    assert client.get_run(worse["mlflow_run_id"]).data.tags["decision"] == "kept champion"


def test_electra_pair_is_fine_tuned_and_both_champions_move_together(home):
    """ELECTRA is registered as two models; the finetune flow trains on from the champion pair (downloaded from
    MLflow unchanged) and moves both aliases together, or neither."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from flows.finetune import finetune
    from flows.pretrain import pretrain
    from tasks import tracking

    client = tracking.client()
    names = ("el-test-generator", "el-test-discriminator")
    base = pretrain(corpus=str(write_lines(home / "electra-base.txt", lines(1500))), model_type="electra",
                    args=TINY_ELECTRA, register_as="el-test", experiment="electra-champion")
    assert {base["registered"][part]["version"] for part in ("generator", "discriminator")} == {"1"}

    incoming = home / "electra-incoming"
    write_lines(incoming / "day1.txt", lines(1500, start=1500))
    tune = {"max_seq_length": 64, "max_steps": 40, "learning_rate": 1e-3, "save_steps": -1}
    better = finetune(corpus_dir=str(incoming), register_as="el-test", args=tune)
    assert better["trained"] and better["promoted"]
    assert better["challenger_perplexity"] < better["champion_perplexity"]
    assert better["champion_versions"] == {name: "2" for name in names}
    assert [str(client.get_model_version_by_alias(n, "champion").version) for n in names] == ["2", "2"]
    run = client.get_run(better["mlflow_run_id"])
    assert run.data.tags["decision"] == "promoted" and "el-test-discriminator v1" in run.data.tags["decision_detail"]
    assert one_perplexity_per_model(run, better)
    assert "champion_discriminator_accuracy" in run.data.metrics and "challenger_generator_perplexity" in \
        run.data.metrics
    # The pair it started from is the registered champion, weights bit-equal after the round trip through MLflow.
    pair = home / "pipeline" / "registered" / "el-test-g1-d1"
    for part in ("generator_model", "discriminator_model"):
        got, trained = (load_file(str(Path(d) / part / "model.safetensors")) for d in (pair, base["output_dir"]))
        assert got.keys() == trained.keys() and all(torch.equal(got[k], trained[k]) for k in got)

    assert finetune(corpus_dir=str(incoming), register_as="el-test")["reason"] == "nothing new in corpus_dir"

    worse = finetune(corpus_dir=str(incoming), register_as="el-test", force=True,
                     args={**tune, "max_steps": 6, "learning_rate": 1.0, "warmup_steps": 1})
    assert worse["trained"] and not worse["promoted"]
    assert worse["challenger_perplexity"] > worse["champion_perplexity"]
    assert [str(client.get_model_version_by_alias(n, "champion").version) for n in names] == ["2", "2"]
    assert [str(client.get_model_version_by_alias(n, "challenger").version) for n in names] == ["3", "3"]


def one_perplexity_per_model(run, outcome: dict) -> bool:
    """Every perplexity the flow run's log mentions (the engine's lines, the evaluations, the decision) is the
    champion's or the challenger's, to the precision it is printed with, and the decision names both."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the logs still queued in this process
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    logs: list = []
    with get_client(sync_client=True) as prefect:
        while True:
            page = prefect.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200,
                                     offset=len(logs))
            logs += page
            if len(page) < 200:
                break
    text = "\n".join(log.message for log in logs)
    figures = {float(f) for f in re.findall(r"perplexity[=: ]+(\d+\.\d+)", text, re.I)}
    models = (outcome["champion_perplexity"], outcome["challenger_perplexity"])
    strays = [f for f in figures if not any(abs(f - m) <= 0.006 for m in models)]
    assert not strays, f"perplexities {strays} belong to neither model {models}:\n{text[-4000:]}"
    decision = run.data.tags["decision_detail"]
    assert all(f"{m:.4f}" in decision for m in models) and all(f"{m:.4f}" in text for m in models)
    return True


@pytest.mark.parametrize("case, config, reason", [
    ("unknown-field", {"no_such_field": 1}, "no_such_field"),
    ("transformers-refuses", {"hidden_size": 65, "num_hidden_layers": 1, "num_attention_heads": 2,
                              "intermediate_size": 8}, r"hidden size \(65\)"),
], ids=["unknown-field", "transformers-refuses"])
def test_failing_run_is_failed_in_mlflow_and_not_retried(home, case, config, reason):
    from prefect.client.orchestration import get_client

    from flows.pretrain import pretrain
    from tasks import tracking

    state = pretrain(corpus=str(SAMPLE / "eval.txt"), args={**TINY, "config": config},
                     experiment=f"failing-{case}", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=reason):
        state.result()
    client = tracking.client()
    exp = client.get_experiment_by_name(f"failing-{case}")
    (parent,) = client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")
    assert parent.info.status == "FAILED" and re.search(reason, parent.data.tags["error"])
    children = child_runs(client, parent.info.run_id)
    if case == "transformers-refuses":  # found on the meta device before any stage ran (tasks.inputs.shape_problems)
        assert not children
        return
    assert [r.info.status for r in children["pretrain"]] == ["FAILED"]  # bad settings: one attempt only
    assert all(r.info.status == "FINISHED" for r in children.get("prepare_corpus", []))

    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs()
    pretrain_runs = [t for t in task_runs if t.flow_run_id == state.state_details.flow_run_id
                     and t.name.startswith("pretrain")]
    assert len(pretrain_runs) == 1 and pretrain_runs[0].run_count == 1


def test_crashed_engine_is_retried_and_resumes_from_its_checkpoint(home):
    """Kill the engine right after its step-10 checkpoint: Prefect retries the task, and the retry continues from
    step 11 (its first logged step) instead of starting over."""
    import threading
    import time

    import psutil
    from prefect import flow

    from tasks import tracking
    from tasks.corpus import prepare_corpus
    from tasks.pretrain import pretrain as pretrain_task

    out = home / "crash-model"
    prep = prepare_corpus.fn(corpus=str(write_lines(home / "crash.txt", lines(1500))))
    parent = tracking.start_run("crash", "parent")
    killed = []

    def kill_after_checkpoint():
        deadline = time.time() + 180
        while not killed and time.time() < deadline:
            if (out / "checkpoint-10").exists():
                for p in psutil.Process().children(recursive=True):
                    if "lmcore" in " ".join(p.cmdline()):
                        p.kill()
                        killed.append(p.pid)
            time.sleep(0.02)

    @flow
    def train_once():
        return pretrain_task(model_type="bert", train_file=prep["train_file"], eval_file=prep["eval_file"],
                             output_dir=str(out), args={**TINY, "max_steps": 30, "save_steps": 10},
                             parent_run_id=parent)

    threading.Thread(target=kill_after_checkpoint, daemon=True).start()
    result = train_once()
    assert killed and result["result"]["global_step"] == 30
    client = tracking.client()
    attempts = sorted(child_runs(client, parent)["pretrain"], key=lambda r: r.info.start_time)
    assert [r.info.status for r in attempts] == ["FAILED", "FINISHED"]
    resumed = [m.step for m in client.get_metric_history(attempts[1].info.run_id, "train_loss")]
    assert resumed == list(range(11, 31))


def test_a_users_args_go_over_the_demo_preset(home, tmp_path):
    """The issue's first run: a Parquet folder with a `content` column and only `args: {"text_column":
    "content"}`. The run trains the deployments' demo-size model (not the engine's BERT-base), and says so: the
    effective settings as params and in effective_args.json, the saved model's config."""
    import json

    import pandas as pd
    from transformers import AutoConfig

    from flows.pretrain import pretrain
    from tasks import tracking

    folder = home / "copyrights"
    folder.mkdir()
    texts = lines(2000)
    pd.DataFrame({"content": texts[:1000]}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({"content": texts[1000:]}).to_parquet(folder / "part-1.parquet")
    out = pretrain(corpus=str(folder), args={"text_column": "content"}, experiment="presets")
    client = tracking.client()
    run = client.get_run(out["mlflow_run_id"])
    params = run.data.params
    assert params["preset"] == "demo" and params["args.text_column"] == "content"
    assert (params["args.config.hidden_size"], params["args.max_steps"], params["args.vocab_size"]) == \
        ("64", "150", "2000")
    saved = json.loads(open(client.download_artifacts(run.info.run_id, "effective_args.json", str(tmp_path))).read())
    assert saved["given"] == {"text_column": "content"}
    assert saved["effective"]["config"]["hidden_size"] == 64 and saved["effective"]["max_steps"] == 150
    config = AutoConfig.from_pretrained(out["output_dir"])
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (64, 2, 128)
    assert config.vocab_size <= 2000
    (train,) = child_runs(client, run.info.run_id)["pretrain"]
    assert train.data.metrics["global_step"] == 150
