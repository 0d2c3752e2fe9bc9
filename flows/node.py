"""Flow `node`: one machine's part of a training on several machines (pretrain with nnodes > 1).

The pretrain stage submits one run of this flow's deployment per node (prefect.yaml: `node/torchrun` on the work
pool `nodes`, whose workers, one per machine, each take one node job at a time); each runs torchrun, which meets the
other nodes through the c10d rendezvous. It is not started by hand: `python -m tasks.nodes` runs one node outside
Prefect.
"""

from __future__ import annotations

from prefect import flow

from tasks.nodes import train_node


@flow(name="node")
def node(spec: str, index: int, nnodes: str, rdzv_id: str, nproc_per_node: int = 1, max_restarts: int = 0,
         rdzv_endpoint: str | None = None, rdzv_timeout: int = 600, mlflow_run_id: str | None = None,
         mlflow_tracking_uri: str | None = None) -> dict:
    """Node `index` of the training described by `spec` (a run spec on storage every node reaches): torchrun with
    nproc_per_node processes, rendezvous `rdzv_id` at `rdzv_endpoint` (None: the first node publishes its address)
    within rdzv_timeout seconds. Not retried here: the pretrain stage retries all nodes together."""
    return train_node(spec=spec, index=index, nnodes=nnodes, rdzv_id=rdzv_id, nproc_per_node=nproc_per_node,
                      max_restarts=max_restarts, rdzv_endpoint=rdzv_endpoint, rdzv_timeout=rdzv_timeout,
                      mlflow_run_id=mlflow_run_id, mlflow_tracking_uri=mlflow_tracking_uri)
