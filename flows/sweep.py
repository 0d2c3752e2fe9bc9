"""Flow `sweep` (deployment pretrain/sweep): many pretrain runs from one, chosen by Optuna (a grid, or TPE), at most
max_parallel at once, bad trials stopped early, the comparison drawn on one MLflow run, the best model registered
with the alias `best`. Resubmitting the same sweep resumes it: finished trials are not run again.

    python -m flows.sweep --base '{"corpus": "data/mine.txt"}' --space '{"learning_rate": [1e-3, 5e-4]}'
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.common import deployments_help


def cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0],
                                epilog=deployments_help("sweep"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=json.loads, required=True,
                   help="pretrain parameters every trial shares, as JSON (corpus, model_type, args, preset, ...)")
    p.add_argument("--space", type=json.loads, required=True,
                   help='per field: a list of values or {"low", "high", "log", "step"}, as JSON')
    p.add_argument("--trials", type=int)
    p.add_argument("--method", default="tpe", choices=("grid", "tpe"))
    p.add_argument("--objective", default="perplexity")
    p.add_argument("--direction", choices=("minimize", "maximize"))
    p.add_argument("--max-parallel", type=int, default=1)
    p.add_argument("--prune", type=json.loads, default=True, help="true, false, or the rule's settings as JSON")
    p.add_argument("--name", default="sweep")
    p.add_argument("--register-as")
    p.add_argument("--experiment", default="sweeps")
    return p


if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    cli().parse_args()

import contextvars  # noqa: E402 (after the --help path)
import inspect  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # noqa: E402

from prefect import flow  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from flows.common import use_running_server_or_temporary  # noqa: E402
from flows.pretrain import pretrain  # noqa: E402
from tasks import sweep as trials_of  # noqa: E402
from tasks.common import logger  # noqa: E402
from tasks.inputs import default_model_name  # noqa: E402
from tasks.pruning import make_pruner  # noqa: E402
from tasks.registry import register  # noqa: E402
from tasks.sweep_check import check_sweep  # noqa: E402
from tasks.sweep_space import apply  # noqa: E402
from tasks.sweep_report import already_registered, best_trial, log_report, mark_best  # noqa: E402
from tasks.sweep_store import open_study, storage_url, study_name  # noqa: E402


@flow(name="pretrain", flow_run_name="sweep-{name}")
def sweep(base: dict, space: dict, trials: int | None = None, method: str = "tpe", objective: str | dict = "perplexity",
          direction: str | None = None, max_parallel: int = 1, prune: bool | dict = True, name: str = "sweep",
          register_as: str | None = None, experiment: str = "sweeps", seed: int = 42) -> dict:
    """Run `trials` pretrain runs (base: the parameters all share; space: what varies) and register the best.

    method: grid (every combination, in order; trials caps it) or tpe (Optuna's TPE; trials default 8). objective:
    a metric the trials log (perplexity, eval_loss, discriminator_accuracy, downstream.<task>.accuracy ...) or
    {"metric", "direction"}. prune: stop a trial whose evaluations during training are clearly behind the finished
    trials' (true; false; or {"margin", "n_startup_trials", "n_warmup_steps"}: tasks/pruning.py); only objectives
    measured during training (perplexity, eval_loss) can prune. The study lives in the pipeline's database
    (tasks/sweep_store.py) under `name` and a digest of the sweep: resubmitting resumes it."""
    checked = check_sweep(base, space, trials, method, objective, direction, max_parallel, prune,
                          set(inspect.signature(pretrain.fn).parameters))
    dims, goal, base = checked["dims"], checked["objective"], checked["base"]
    study = open_study(storage_url(), study_name(name, base, space, method, (goal.metric, goal.direction)),
                       goal.direction, sampler=checked["sampler"](seed), pruner=make_pruner(prune) or None)
    log = logger()
    again = trials_of.take_over(study, str(flow_run.id) if flow_run.id else None)
    todo = trials_of.plan(study, dims, method, trials, again)
    total = todo.finished + todo.budget
    log.info("sweep %s: %d trial(s) to run (%d finished earlier%s), %s, %s %s, at most %d at once", study.study_name,
             todo.budget, todo.finished, f", {len(again)} interrupted run again" if again else "", method,
             goal.direction, goal.metric, max_parallel)
    run_id = trials_of.sweep_run(experiment, study, {"base": base, "space": space, "method": method,
                                                      "objective": goal.metric, "direction": goal.direction,
                                                      "trials": total, "prune": prune, "max_parallel": max_parallel})
    trials_of.show_sweep_columns(run_id, dims, goal)
    artifact_key = "sweep-" + "".join(ch if ch.isalnum() else "-" for ch in study.study_name.lower())
    distributions = {d.name: d.distribution() for d in dims}
    for assignment in todo.queue:
        study.enqueue_trial(assignment)

    def run_one(trial, assignment: dict, where: dict) -> tuple:
        params = apply(base, assignment)
        state = pretrain.with_options(flow_run_name=f"{name}-trial-{trial.number}")(
            **params, experiment=experiment, register_model=False, return_state=True, **where)
        return trial, state, where

    started, any_done = 0, todo.finished > 0
    with ThreadPoolExecutor(max_workers=max_parallel) as pool, _tracked(run_id):
        running = set()
        while started < todo.budget or running:
            # The first trial runs alone: its prepared corpus and tokenizer are then in the caches the others use.
            while started < todo.budget and len(running) < (max_parallel if any_done else 1):
                trial = study.ask(distributions)
                assignment = {d.name: trial.params[d.name] for d in dims}
                where = trials_of.begin_trial(study, trial, assignment, run_id, experiment,
                                              str(flow_run.id) if flow_run.id else None, goal, prune)
                # In a copy of this context: Prefect's settings (the API in use) and the flow run are context vars.
                running.add(pool.submit(contextvars.copy_context().run, run_one, trial, assignment, where))
                started += 1
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            any_done = True
            for future in finished:
                trial, state, where = future.result()
                row = trials_of.end_trial(study, trial, trials_of.outcome(state, where["mlflow_run_id"], goal),
                                          where["mlflow_run_id"])
                log.info("%s", trials_of.line(row, dims, goal, total))
                trials_of.publish_table(study, artifact_key, goal)
        logged = log_report(run_id, study, dims, goal)
        best = best_trial(study, goal)
        registered = None
        if best is not None:
            model_type = best.params.get("model_type", base.get("model_type", "bert"))
            register_as = register_as or base.get("register_as") or default_model_name(base["corpus"], model_type)
            if not already_registered(register_as, study, best):
                registered = register(model_type, best.user_attrs["output_dir"], register_as,
                                      mlm=apply(base, best.params)["args"].get("mlm", True),
                                      tags={"sweep": study.study_name, "sweep.trial": best.number},
                                      parent_run_id=run_id)
                mark_best(registered, study, best, goal)
            log.info("best: trial %d, %s %.4g (%s), registered as %s with alias %r", best.number, goal.metric,
                     best.value, ", ".join(f"{k}={v}" for k, v in best.params.items()), register_as, trials_of.BEST)
        else:
            log.warning("sweep %s: no trial completed; nothing registered", study.study_name)
    return {"study": study.study_name, "mlflow_run_id": run_id, "rows": trials_of.rows(study), "artifacts": logged,
            "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
            "registered": registered}


def _tracked(run_id: str):
    from tasks import tracking

    return tracking.tracked(run_id)


def main(argv=None) -> None:
    ns = cli().parse_args(argv)
    with use_running_server_or_temporary():
        out = sweep(base=ns.base, space=ns.space, trials=ns.trials, method=ns.method, objective=ns.objective,
                    direction=ns.direction, max_parallel=ns.max_parallel, prune=ns.prune, name=ns.name,
                    register_as=ns.register_as, experiment=ns.experiment)
    print(json.dumps({"study": out["study"], "best": out["best"]}))


if __name__ == "__main__":
    main()
