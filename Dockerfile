# syntax=docker/dockerfile:1
# One image recipe for the five Switchboard services. Build from the repository root,
# naming the service and its HTTP port (deploy/compose/docker-compose.yml does this):
#   docker build --build-arg SERVICE=router --build-arg HTTP_PORT=8003 \
#     --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) -t switchboard/router .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the lock file: this layer changes only with it.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY libs/devkit/pyproject.toml libs/devkit/
COPY tools/devtools/pyproject.toml tools/devtools/
COPY services/ingest-email/pyproject.toml services/ingest-email/
COPY services/ingest-social/pyproject.toml services/ingest-social/
COPY services/router/pyproject.toml services/router/
COPY services/sla-monitor/pyproject.toml services/sla-monitor/
COPY services/webchat/pyproject.toml services/webchat/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "switchboard-${SERVICE}"
# Then our code, installed as wheels (not editable) into the same environment.
COPY libs/common libs/common
COPY services/${SERVICE} services/${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "switchboard-${SERVICE}" \
    && ln -s "/app/.venv/bin/switchboard-${SERVICE}" /app/.venv/bin/switchboard-service

FROM ${PYTHON_IMAGE}
ARG HTTP_PORT
# The commit the image was built from, shown as switchboard_build_info{commit=...}.
ARG GIT_COMMIT=unknown
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /app/.venv /app/.venv
# Bytecode is compiled at build time, so the root filesystem can be mounted read-only.
# INGEST_EMAIL_SMTP_HOST only concerns ingest-email (its SMTP listener); others ignore it.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHBOARD_HTTP_HOST=0.0.0.0 \
    SWITCHBOARD_LOG_FORMAT=json \
    SWITCHBOARD_HEALTH_PORT=${HTTP_PORT} \
    SWITCHBOARD_GIT_COMMIT=${GIT_COMMIT} \
    INGEST_EMAIL_SMTP_HOST=0.0.0.0
USER 10001:10001
EXPOSE ${HTTP_PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['SWITCHBOARD_HEALTH_PORT'], timeout=2)"]
ENTRYPOINT ["switchboard-service"]
