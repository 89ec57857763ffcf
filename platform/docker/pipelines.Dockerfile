# Airflow + training image: the DAGs in dags/ run the library's pipelines in-process.
# Build from the repository root:
#   docker build -f platform/docker/pipelines.Dockerfile -t ltr-pipelines .
# torch is pinned to 2.13.0 in requirements/constraints.txt. The default PyPI wheel for Linux
# is the CUDA build; the CPU wheel needs the PyTorch CPU index:
#   --extra-index-url https://download.pytorch.org/whl/cpu
# For a GPU image drop that index (and start from a CUDA base image).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    LTR_HOME=/var/lib/ltr

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 50000 airflow \
    && useradd --system --uid 50000 --gid airflow --home-dir /opt/airflow --create-home \
       --shell /bin/bash airflow

WORKDIR /app

COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY ltr/ ltr/
COPY serving/ serving/

RUN pip install --extra-index-url "${TORCH_INDEX_URL}" \
        -c requirements/constraints.txt ".[training,orchestration]"

COPY dags/ dags/
COPY configs/ configs/
COPY feature_repo/ feature_repo/

RUN mkdir -p /var/lib/ltr /opt/airflow \
    && chown -R airflow:airflow /var/lib/ltr /opt/airflow

USER airflow

EXPOSE 8080

CMD ["airflow", "standalone"]
