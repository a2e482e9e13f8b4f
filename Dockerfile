# syntax=docker/dockerfile:1
# memaudit API. Default: the GPU image (onnxruntime-gpu 1.31.1 needs CUDA 13.x + cuDNN 9, which
# the NVIDIA base provides). CPU image: --build-arg FLAVOR=cpu --build-arg BASE_IMAGE=ubuntu:24.04
# (compose.cpu.yaml does this). Python 3.11 is a uv-managed standalone build, so the runtime
# stage needs no compiler, no apt packages and no PyTorch.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${BASE_IMAGE} AS build
ARG FLAVOR=gpu
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
COPY requirements ./requirements
RUN uv python install 3.11 \
 && uv venv --python 3.11 /opt/venv \
 && uv pip install --python /opt/venv/bin/python -r "requirements/serve-${FLAVOR}.txt"
COPY pyproject.toml README.md ./
COPY app ./app
RUN uv pip install --python /opt/venv/bin/python --no-deps .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="memaudit" \
      org.opencontainers.image.description="Audit synthetic medical images for leaked training data"
RUN groupadd --system --gid 10001 memaudit \
 && useradd --system --uid 10001 --gid memaudit --home-dir /srv/memaudit memaudit \
 && mkdir -p /var/lib/memaudit \
 && chown memaudit:memaudit /var/lib/memaudit
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/memaudit
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
COPY docker/entrypoint.sh /usr/local/bin/memaudit-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MEMAUDIT_DATA_DIR=/var/lib/memaudit \
    MEMAUDIT_MIGRATIONS_DIR=/srv/memaudit/migrations \
    MEMAUDIT_MODELS_DIR=/srv/memaudit/models \
    MEMAUDIT_WORKERS=1
USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/memaudit"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["memaudit-entrypoint"]
