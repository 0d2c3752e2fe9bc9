# The project's image: the engine, the pipeline's flows and tasks, and the environment they run in. A Prefect
# Docker or Kubernetes work pool runs its node jobs from it (the worker starts the container with
# `prefect flow-run execute`, the image's default command); `docker run IMAGE node --spec ... --rdzv-id ...` runs
# one node of a training by hand. torch CPU by default:
#   docker build -t lmcore-pipeline .
# CUDA (a CUDA base image and torch's CUDA wheels):
#   docker build -t lmcore-pipeline:cuda --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# CUDA base images have no Python: install one there (python:* images have theirs).
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
    PIPELINE_HOME=/pipeline
WORKDIR /opt/lmcore

# torch first, pinned and alone (as scripts/setup does): a loose torch requirement can pull another build.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY requirements.txt pyproject.toml README.md LICENSE THIRD_PARTY_NOTICES.md ./
RUN pip install --no-cache-dir -r requirements.txt
COPY lmcore/ lmcore/
COPY tasks/ tasks/
COPY flows/ flows/
COPY scripts/entrypoint scripts/entrypoint
COPY prefect.yaml MLproject ./
RUN pip install --no-cache-dir --no-deps -e .

# PIPELINE_HOME: mount the shared folder every node reaches here (spec, checkpoints, models, node logs).
VOLUME /pipeline
ENTRYPOINT ["/opt/lmcore/scripts/entrypoint"]
CMD ["prefect", "flow-run", "execute"]
