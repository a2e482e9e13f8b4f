# memaudit API image. Part 3 (issue 5) turns this into the CUDA + cuDNN onnxruntime-gpu
# image; until then it runs the CPU build on a slim Python base.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --prefix=/install ".[cpu]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 memaudit
COPY --from=build /install /usr/local
WORKDIR /srv/memaudit
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
ENV MEMAUDIT_DATA_DIR=/var/lib/memaudit \
    MEMAUDIT_MIGRATIONS_DIR=/srv/memaudit/migrations \
    PYTHONUNBUFFERED=1
RUN mkdir -p /var/lib/memaudit && chown memaudit /var/lib/memaudit
USER memaudit
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)" || exit 1
CMD ["sh", "-c", "memaudit migrate && exec memaudit serve --host 0.0.0.0 --port 8000 --workers ${MEMAUDIT_WORKERS:-1}"]
