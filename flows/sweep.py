"""Flow `sweep` (deployment pretrain/sweep): many pretrain runs from one, chosen by Optuna (a grid, or TPE), at most
max_parallel at once, bad trials stopped early, the comparison drawn on one MLflow run, the best model registered
with the alias `best`. Resubmitting the same sweep resumes it: finished trials are not run again.

    python -m flows.sweep --base '{"corpus": "data/mine.txt"}' --space '{"learning_rate": [1e-3, 5e-4]}'
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.common import deployments_help, none_if_empty


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
    p.add_argument("--register-as", type=none_if_empty, help="default: <corpus name>-<model type>")
    p.add_argument("--experiment", default="sweeps")
    p.add_argument("--seed", type=int, default=42)
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
from tasks import sweep as bookkeeping  # noqa: E402
from tasks import tracking  # noqa: E402
from tasks.common import logger  # noqa: E402
from tasks.launch import stop_engines  # noqa: E402
from tasks.pruning import make_pruner  # noqa: E402
from tasks.sweep_check import check_sweep  # noqa: E402
from tasks.sweep_report import log_report, register_best  # noqa: E402
from tasks.sweep_space import apply  # noqa: E402
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
    (tasks/sweep_store.py) under `name` and a digest of the sweep: resubmitting resumes it. The Prefect flow is
    named pretrain, so that the deployment reads pretrain/sweep beside pretrain/from-scratch."""
    checked = check_sweep(base, space, trials, method, objective, direction, max_parallel, prune,
                          set(inspect.signature(pretrain.fn).parameters))
    dims, goal, base = checked["dims"], checked["objective"], checked["base"]
    study = open_study(storage_url(), study_name(name, base, space, method, (goal.metric, goal.direction)),
                       goal.direction, pruner=make_pruner(prune))
    study.sampler = checked["sampler"](seed + len(study.trials))  # a resumed TPE does not replay its first draws
    me = str(flow_run.id) if flow_run.id else None
    interrupted = bookkeeping.take_over(study, me)
    todo = bookkeeping.plan(study, dims, method, trials, interrupted)
    total = todo.finished + todo.budget
    log = logger()
    log.info("sweep %s: %d trial(s) to run (%d finished earlier%s), %s, %s %s, at most %d at once", study.study_name,
             todo.budget, todo.finished, f", {len(interrupted)} interrupted run again" if interrupted else "",
             method, goal.direction, goal.metric, max_parallel)
    run_id = bookkeeping.sweep_run(experiment, study, {"base": base, "space": space, "method": method,
                                                       "objective": goal.metric, "direction": goal.direction,
                                                       "trials": total, "prune": prune, "max_parallel": max_parallel})
    bookkeeping.show_sweep_columns(run_id, dims, goal)
    for assignment in todo.queue:
        study.enqueue_trial(assignment)
    with tracking.tracked(run_id):
        _run_trials(study, dims, goal, base, todo.budget, total, max_parallel, prune, name, experiment, run_id, me)
        logged = log_report(run_id, study, dims, goal)
        best, registered = register_best(study, base, goal, register_as, run_id)
    return {"study": study.study_name, "mlflow_run_id": run_id, "rows": bookkeeping.rows(study), "artifacts": logged,
            "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
            "registered": registered}


def _run_trials(study, dims, goal, base, budget, total, max_parallel, prune, name, experiment, run_id, me) -> None:
    """Ask Optuna for `budget` trials and run each as a pretrain subflow, at most `max_parallel` at once (the first
    alone when nothing has finished yet, so that the prepared corpus and tokenizer are cached for the others);
    record each as it ends. Interrupted (cancellation, Ctrl-C, an error here), the engines still training are
    stopped and their runs ended KILLED before the interruption goes on."""
    log, distributions = logger(), {d.name: d.distribution() for d in dims}
    artifact_key = "sweep-" + "".join(ch if ch.isalnum() else "-" for ch in study.study_name.lower())
    started, any_done, running = 0, budget < total, {}

    def train(trial, assignment: dict, where: dict):
        return pretrain.with_options(flow_run_name=f"{name}-trial-{trial.number}")(
            **apply(base, assignment), experiment=experiment, register_model=False, return_state=True, **where)

    pool = ThreadPoolExecutor(max_workers=max_parallel)
    try:
        while started < budget or running:
            while started < budget and len(running) < (max_parallel if any_done else 1):
                trial = study.ask(distributions)
                started += 1
                assignment = {d.name: trial.params[d.name] for d in dims}
                same = bookkeeping.repeated(study, trial, bookkeeping.trial_key(assignment))
                if same:
                    log.info("trial %d (%d in the sweep) %s", trial.number, total, same)
                    continue
                where = bookkeeping.begin_trial(study, trial, assignment, run_id, experiment, me, goal, prune)
                # In a copy of this context: Prefect's settings (the API in use) and the flow run are context vars.
                future = pool.submit(contextvars.copy_context().run, train, trial, assignment, where)
                running[future] = (trial, where["mlflow_run_id"])
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            any_done = True
            for future in finished:
                trial, trial_run = running.pop(future)
                row = bookkeeping.end_trial(study, trial, bookkeeping.outcome(future.result(), trial_run, goal),
                                            trial_run)
                log.info("%s", bookkeeping.line(row, dims, goal, total))
                bookkeeping.publish_table(study, artifact_key, goal)
    except BaseException:
        stop_engines()
        pool.shutdown(wait=False, cancel_futures=True)
        for trial, trial_run in running.values():
            bookkeeping.end_killed(trial_run, "interrupted")
        raise
    pool.shutdown()


def main(argv=None) -> None:
    ns = cli().parse_args(argv)
    with use_running_server_or_temporary():
        out = sweep(base=ns.base, space=ns.space, trials=ns.trials, method=ns.method, objective=ns.objective,
                    direction=ns.direction, max_parallel=ns.max_parallel, prune=ns.prune, name=ns.name,
                    register_as=ns.register_as, experiment=ns.experiment, seed=ns.seed)
    print(json.dumps({"study": out["study"], "best": out["best"]}))


if __name__ == "__main__":
    main()
