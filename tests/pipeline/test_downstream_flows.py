"""The downstream stage in the flows, against a Prefect test server and a sqlite MLflow store: a pretrain run with
`downstream` logs accuracy, random-init accuracy, gain and the comparison image on its parent run and tags the
registered version; a second run of the same architecture and tokenizer reuses the random-init baseline; ELECTRA
is scored through its discriminator; `downstream/evaluate` scores a registered version after the fact; `finetune`
with promote_on a downstream metric reuses the champion's recorded figures and logs its reason; bad labelled input
fails the flow before any work. Slow (several tiny trainings and fine-tunings): CI runs them."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.pipeline_support import SAMPLE, TINY, TINY_ELECTRA, child_runs, prefect_test_home, write_lines

pytestmark = pytest.mark.slow

SETTINGS = {"downstream_seeds": 1, "downstream_learning_rates": [1e-3, 5e-3]}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with prefect_test_home(tmp_path_factory.mktemp("downstream-flows")) as tmp:
        yield tmp


@pytest.fixture(scope="module")
def labelled(home):
    """360 rows of the default task (fresh / rotten / plot) as a user's own labelled file, fine-tuned 1 epoch."""
    from tasks.labelled import default_task_file

    rows = pd.read_csv(default_task_file()).dropna().groupby("label").head(120)
    path = home / "reviews.csv"
    rows.to_csv(path, index=False)
    return {"path": str(path), "args": {"num_train_epochs": 1, "max_seq_length": 48, "thread_count": 1}}


def corpus(home, name: str):
    return str(write_lines(home / f"{name}.txt", (SAMPLE / "train.txt").read_text().splitlines()[:1200]))


def no_running_runs(client) -> bool:
    exps = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(exps, "attributes.status = 'RUNNING'")


def test_pretrain_with_downstream_logs_gain_image_and_version_tags(home, labelled):
    from flows.pretrain import pretrain
    from tasks import tracking

    client = tracking.client()
    out = pretrain(corpus=corpus(home, "ds"), args=TINY, register_as="ds-bert", experiment="ds", downstream=labelled,
                   **SETTINGS)
    run = client.get_run(out["mlflow_run_id"])
    m = run.data.metrics
    for arm in ("", "random_init."):
        for k in ("accuracy", "accuracy_std", "f1", "mcc", "learning_rate"):
            assert f"downstream.reviews.{arm}{k}" in m, (arm, k)
        assert m[f"downstream.reviews.{arm}learning_rate"] in (1e-3, 5e-3)
        assert 0.2 <= m[f"downstream.reviews.{arm}accuracy"] <= 1.0
    assert m["downstream.reviews.gain"] == pytest.approx(m["downstream.reviews.accuracy"]
                                                         - m["downstream.reviews.random_init.accuracy"])
    assert out["downstream"]["downstream.reviews.gain"] == pytest.approx(m["downstream.reviews.gain"])
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "downstream.png" in artifacts
    (child,) = child_runs(client, run.info.run_id)["downstream reviews"]
    assert child.info.status == "FINISHED" and child.data.params["random_init_cached"] == "false"
    history = client.get_metric_history(child.info.run_id, "pretrained.lr_0.001.test_accuracy")
    assert [h.step for h in history] == [0]  # one seed
    tags = client.get_model_version("ds-bert", "1").tags
    assert float(tags["downstream.reviews.accuracy"]) == pytest.approx(m["downstream.reviews.accuracy"], abs=1e-4)
    assert tags["downstream.reviews.task_key"] == run.data.tags["downstream.reviews.task_key"]
    view = client.get_experiment(run.info.experiment_id).tags["mlflow.sharedViewState.training"]
    assert "downstream.reviews.gain" in view

    # Another pretraining run of the same architecture on the same corpus (same tokenizer, from the cache):
    # the random-init baseline is not trained again, and its figures are the same.
    again = pretrain(corpus=corpus(home, "ds"), args={**TINY, "max_steps": 10}, register_as="ds-bert",
                     experiment="ds", downstream=labelled, **SETTINGS)
    second = client.get_run(again["mlflow_run_id"])
    (child2,) = child_runs(client, second.info.run_id)["downstream reviews"]
    assert child2.data.params["random_init_cached"] == "true"
    assert second.data.metrics["downstream.reviews.random_init.accuracy"] == \
        m["downstream.reviews.random_init.accuracy"]
    assert no_running_runs(client)


def test_electra_is_scored_through_its_discriminator(home, labelled):
    from flows.pretrain import pretrain
    from tasks import tracking

    client = tracking.client()
    out = pretrain(corpus=corpus(home, "ds-electra"), model_type="electra", args=TINY_ELECTRA,
                   register_as="ds-electra", experiment="ds-electra", downstream=labelled, **SETTINGS)
    run = client.get_run(out["mlflow_run_id"])
    assert "downstream.reviews.gain" in run.data.metrics and "discriminator_accuracy" in run.data.metrics
    (child,) = child_runs(client, run.info.run_id)["downstream reviews"]
    assert child.data.params["model_dir"] == out["output_dir"]
    disc = client.get_model_version("ds-electra-discriminator", "1").tags
    assert "downstream.reviews.accuracy" in disc


def test_downstream_evaluate_scores_a_registered_version_after_the_fact(home, labelled):
    from flows.downstream import downstream
    from tasks import tracking

    client = tracking.client()
    other = {**labelled, "name": "later", "args": {**labelled["args"], "num_train_epochs": 2}}
    out = downstream(model="ds-bert", version="1", downstream=[other], **SETTINGS)
    run = client.get_run(out["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "downstream"
    assert run.info.status == "FINISHED" and run.data.params["version"] == "1"
    assert "downstream.later.gain" in run.data.metrics
    assert "downstream.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    tags = client.get_model_version("ds-bert", "1").tags
    assert "downstream.later.accuracy" in tags and "downstream.reviews.accuracy" in tags
    # An ELECTRA pair by its name: its discriminator, at its champion alias.
    pair = downstream(model="ds-electra", downstream=[other], **SETTINGS)
    assert pair["versions"] == {"ds-electra-generator": "1", "ds-electra-discriminator": "1"}


def test_finetune_promotes_on_a_downstream_metric_with_its_reason(home, labelled):
    from flows.finetune import finetune
    from tasks import tracking

    client = tracking.client()
    incoming = home / "ds-incoming"
    write_lines(incoming / "day1.txt", (SAMPLE / "train.txt").read_text().splitlines()[1200:2400])
    out = finetune(corpus_dir=str(incoming), register_as="ds-bert", args={"max_steps": 10, "save_steps": -1},
                   downstream=labelled, promote_on="downstream.reviews.accuracy", **SETTINGS)
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.tags["champion_downstream"] == "recorded on its version"  # the task key matched
    champion = out["champion_downstream"]
    challenger = out["downstream"]
    m = "downstream.reviews.accuracy"
    pooled = ((champion[f"{m}_std"] ** 2 + challenger[f"{m}_std"] ** 2) / 2) ** 0.5
    assert out["promoted"] == (challenger[m] - champion[m] > pooled)
    assert "pooled std" in run.data.tags["decision_detail"] and run.data.tags["promote_on"] == m
    assert run.data.metrics[f"champion.{m}"] == pytest.approx(champion[m])
    assert no_running_runs(client)


def test_bad_labelled_input_fails_the_flow_before_any_work(home):
    from flows.pretrain import pretrain
    from tasks import tracking

    one = home / "one-class.csv"
    pd.DataFrame({"text": [f"review {i}" for i in range(50)], "label": ["fresh"] * 50}).to_csv(one, index=False)
    state = pretrain(corpus=corpus(home, "bad"), args=TINY, register_as="never", experiment="ds-bad",
                     downstream=[str(one)], return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"one-class.csv \(column 'label'\): one class only"):
        state.result()
    client = tracking.client()
    (parent,) = client.search_runs([client.get_experiment_by_name("ds-bad").experiment_id])
    assert parent.info.status == "FAILED" and not child_runs(client, parent.info.run_id)
    assert not client.search_registered_models("name='never'")
    assert no_running_runs(client)
