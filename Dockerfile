# syntax=docker/dockerfile:1
# cdrstream: the `cdrstream` command line in a container, with RocksDB support.
#
#   docker build -t cdrstream:local .
#   docker run --rm cdrstream:local --help
#   docker run --rm -v "$PWD/deploy/compose/config.toml:/etc/cdrstream/config.toml:ro" \
#       cdrstream:local worker --config /etc/cdrstream/config.toml
#
# The entrypoint is `cdrstream`; the arguments choose the subcommand (default: `worker` on
# the embedded default config). Configuration comes from a mounted TOML file (--config) plus
# the CDRSTREAM_<TABLE>__<KEY> / KAFKA_BOOTSTRAP_SERVERS environment overrides; the image sets
# none of those, so a mounted config file is never overridden behind your back.
# deploy/README.md shows how compose.yaml and deploy/k8s/ use it.

# ---------------------------------------------------------------- build stage
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/cdrstream \
    && python -m venv /opt/build-tools \
    && /opt/build-tools/bin/pip install "mypy>=1.10" "setuptools>=65" \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): the project metadata and readme,
# the package, and the Avro schemas that pyproject.toml force-includes as streams/_avro.
COPY pyproject.toml README.md ./
COPY avro/ avro/
COPY streams/ streams/
COPY hatch_build.py ./
# The compiled core (streams/native.py): mypyc from the tools venv compiles the package's
# sources in place, and hatch_build.py puts the extension modules in the wheel.
RUN /opt/cdrstream/bin/pip install ".[rocksdb]" \
    && PYTHONPATH=/src /opt/build-tools/bin/python -c \
        'import sys; from streams.native import main; sys.exit(main(["build"]))' \
    && /opt/cdrstream/bin/pip install --force-reinstall --no-deps . \
    && /opt/cdrstream/bin/python -c \
        'import streams.native as n; ok, why = n.status(); print(why); raise SystemExit(not ok)' 

# ---------------------------------------------------------------- runtime stage
FROM python:3.11-slim

ENV PATH=/opt/cdrstream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed, numeric non-root user (deploy/k8s runs it with runAsUser/fsGroup 10001), and the
# worker's RocksDB data dir owned by it: a new named volume mounted there (compose) starts
# with this ownership.
RUN groupadd --system --gid 10001 cdrstream \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/cdrstream \
        --shell /usr/sbin/nologin cdrstream \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/cdrstream

COPY --from=build /opt/cdrstream /opt/cdrstream

USER 10001:10001
WORKDIR /home/cdrstream

# [worker] web_port: Prometheus /metrics
EXPOSE 6066

ENTRYPOINT ["cdrstream"]
CMD ["worker"]
