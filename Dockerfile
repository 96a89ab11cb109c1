# The Sluice controller image: `docker build -t sluice:0.1.0 .`
# Runs `sluice serve` as an unprivileged user (uid 10001); deploy/ runs it with a read-only
# root filesystem. Any other command: `docker run --rm sluice:0.1.0 policy validate ...`.

# Build: the project and its dependencies into a virtual environment.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/sluice
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN /opt/sluice/bin/pip install . \
    && /opt/sluice/bin/python -m compileall -q /opt/sluice/lib

# Run: the virtual environment only, no compiler, no pip cache, no sources.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sluice
COPY --from=build /opt/sluice /opt/sluice
# Bytecode was compiled at build time: nothing is written under a read-only root.
ENV PATH=/opt/sluice/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SLUICE_STATE=/var/lib/sluice/state.db
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/sluice
WORKDIR /var/lib/sluice
USER 10001:10001
# xDS (gRPC) and the admin API (/healthz, /readyz, /metrics, the CLI's API).
EXPOSE 18000 18001
ENTRYPOINT ["sluice"]
CMD ["serve", "--xds-address", "0.0.0.0:18000", "--admin-address", "0.0.0.0:18001"]
