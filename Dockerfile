# BioPilot: one image for every stage (collect, process, dashboard, simulate); the service's command picks it.
# Built by docker-compose.yml (`docker compose build`); see the README, Deploy.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/biopilot
# The packages first, then the install: a change of config/ or docs does not reinstall the dependencies.
COPY pyproject.toml README.md ./
COPY biopilot ./biopilot
COPY storage ./storage
COPY collectors ./collectors
COPY processing ./processing
COPY simulators ./simulators
COPY dashboard ./dashboard
RUN pip install . && rm -rf build *.egg-info
# The shipped site configs (the demo, the example with every key, scenarios) for reference; a deployment
# mounts its own site config (docker-compose.yml: deploy/site.toml at /etc/biopilot/site.toml).
COPY config ./config

# Not root: a system user owning only its data directory (the compose file mounts a volume there).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/biopilot --create-home --shell /usr/sbin/nologin biopilot
USER biopilot
WORKDIR /var/lib/biopilot

ENTRYPOINT ["biopilot"]
CMD ["--help"]
