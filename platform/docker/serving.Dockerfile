# Rank service image: FastAPI + ONNX Runtime, no torch (the `serving` extra does not pull it).
# Build from the repository root:
#   docker build -f platform/docker/serving.Dockerfile -t ltr-serving .
# Settings come from LTR_* environment variables (serving/settings.py). With
# LTR_ENVIRONMENT=production the service refuses to start without LTR_API_KEY (>= 16 chars)
# and LTR_REDIS_URL; pass them at run time, never bake them into the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LTR_ENVIRONMENT=production \
    LTR_HOME=/var/lib/ltr \
    LTR_MODEL_STORE=/var/lib/ltr/models

RUN groupadd --system --gid 10001 ltr \
    && useradd --system --uid 10001 --gid ltr --home-dir /app --shell /usr/sbin/nologin ltr

WORKDIR /app

# Metadata first, then the code the service imports (serving/ and the light parts of ltr/).
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY ltr/ ltr/
COPY serving/ serving/
COPY feature_repo/ feature_repo/

RUN pip install -c requirements/constraints.txt ".[serving]" \
    && mkdir -p /var/lib/ltr/models \
    && chown -R ltr:ltr /var/lib/ltr

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]

CMD ["uvicorn", "serving.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--loop", "uvloop", "--http", "httptools"]
