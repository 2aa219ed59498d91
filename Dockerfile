# syntax=docker/dockerfile:1
# upstox-bot image: the API, the Celery workers and beat all run from it (see docker-compose.yml).

# --- build: install the pinned dependencies and the package (with its compiled feed decoder) --
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY backend/pyproject.toml backend/setup.py backend/native_sources.py backend/README.md ./
COPY backend/src ./src
RUN pip install .

# --- runtime: the virtualenv only, run as an unprivileged user --------------------------------
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 upstox \
    && useradd --system --uid 10001 --gid upstox --home-dir /app --shell /usr/sbin/nologin upstox \
    && mkdir -p /app/var \
    && chown -R upstox:upstox /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/app/var \
    LOG_FORMAT=json \
    API_HOST=0.0.0.0 \
    API_PORT=8000
WORKDIR /app
USER upstox
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["upstox-bot", "api"]
