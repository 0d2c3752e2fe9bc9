"""Flow `downstream`: score a registered model version on labelled tasks after the fact (fine-tuned over seeds x a
learning-rate grid, beside random initialisation), so runs trained before the downstream stage existed can be
compared. Logs into the experiment `downstream` (one parent run per flow run, one child run per task), or into an
existing run named by `run_id` (the pretrain run that trained the model, say); the figures also go on the
registered version as tags.

    python -m flows.downstream --model sample-data-bert --downstream rotten_tomatoes          # its champion
    python -m flows.downstream --model my-electra --version 3 --downstream data/labelled.csv  # a pair's discriminator
"""

from __future__ import annotations

import argparse
import json

from prefect import flow

from flows.common import none_if_empty, use_running_server_or_temporary
from tasks import tracking
from tasks.downstream import downstream as downstream_task
from tasks.inputs import check_downstream
from tasks.registry import fetch_champion, find_version, tag_version


@flow(name="downstream")
def downstream(model: str, downstream: str | list | dict, version: str | None = None, alias: str | None = None,
               downstream_seeds: int = 3, downstream_learning_rates: list[float] | None = None,
               experiment: str = "downstream", run_id: str | None = None) -> dict:
    """Fine-tune registered model `model` (an ELECTRA pair's name: its discriminator) at `version` (else the
    version with `alias`, default champion) on each labelled task of `downstream` and compare with random
    initialisation. run_id: log into that existing run instead of a new one in `experiment`."""
    with tracking.flow_parent_run(experiment, {"stage": "downstream", "registered_model": model},
                                  run_id=run_id) as parent:
        tasks = check_downstream(downstream, downstream_seeds, downstream_learning_rates)
        found = find_version(model, version, alias)
        local = fetch_champion(found)
        tracking.log_params(parent, {"registered_model": model, "version": found["version"],
                                     "downstream_seeds": downstream_seeds,
                                     "downstream_learning_rates": downstream_learning_rates})
        scored = downstream_task(local["model_type"], local["folder"], tasks, downstream_seeds,
                                 downstream_learning_rates, parent_run_id=parent,
                                 label=f"{model} v{found['version']}")
        tag_version(found["versions"], scored["tags"])
    return {"mlflow_run_id": parent, "versions": found["versions"], "downstream": scored["figures"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.downstream", description=downstream.description)
    p.add_argument("--model", required=True, help="a registered model (an ELECTRA pair: its base name)")
    p.add_argument("--version", type=none_if_empty)
    p.add_argument("--alias", type=none_if_empty, help="default: champion")
    p.add_argument("--downstream", nargs="+", required=True,
                   help="labelled files or folders (rotten_tomatoes: the demo task)")
    p.add_argument("--downstream-seeds", type=int, default=3)
    p.add_argument("--downstream-learning-rates", type=float, nargs="*")
    p.add_argument("--experiment", default="downstream")
    p.add_argument("--run-id", type=none_if_empty, help="log into this existing MLflow run")
    ns = p.parse_args(argv)
    with use_running_server_or_temporary():
        out = downstream(model=ns.model, downstream=ns.downstream, version=ns.version, alias=ns.alias,
                         downstream_seeds=ns.downstream_seeds,
                         downstream_learning_rates=ns.downstream_learning_rates or None,
                         experiment=ns.experiment, run_id=ns.run_id)
    print(json.dumps(out["downstream"]))


if __name__ == "__main__":
    main()
