# The ledger's image: its dependencies installed from requirements.lock (exact versions, checked by hash),
# run as an unprivileged user, with a health check on readiness.
#
# The base image is pinned by its exact version; pin it by digest too where the registry is reachable:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm   ->   FROM python:3.11.11-slim-bookworm@sha256:…
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ledger
COPY requirements.lock /tmp/requirements.lock
# Wheels only, each checked against its hash in the lock: nothing is resolved or built here.
RUN /opt/ledger/bin/pip install --require-hashes --only-binary :all: --no-deps -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY commands commands
COPY projections projections
COPY api api
COPY service service
COPY finance finance
COPY web web
COPY cli cli
# The project itself, with the setuptools of the lock: no dependency is fetched.
RUN /opt/ledger/bin/pip install --no-deps --no-build-isolation . \
    && /opt/ledger/bin/pip check

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --home-dir /data --no-create-home --shell /usr/sbin/nologin ledger \
    && mkdir /data && chown ledger:ledger /data
COPY --from=build /opt/ledger /opt/ledger
ENV PATH=/opt/ledger/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LEDGER_DATA_DIR=/data \
    LEDGER_LOG_FORMAT=json
WORKDIR /data
USER 10001:10001
VOLUME /data
EXPOSE 8000
# Ready: the store answers and no read model stopped (GET /readyz). The processes of this image that serve no
# HTTP (ledger projections, ledger scheduler, ledger migrate) switch it off in docker-compose.yml.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
