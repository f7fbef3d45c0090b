# Two images, built by docker-compose.yml as two targets:
#   replicante  the core worker and the CLI (`replicante worker`, `replicante cluster apply`)
#   agent       the same plus the Docker CLI, with which a node agent starts and stops its
#               datastore member's container (see the agents in docker-compose.yml)
FROM python:3.11.11-slim-bookworm AS replicante
WORKDIR /app
# Every dependency at the version and hash requirements/production.txt pins (scripts/lock
# writes it), then the project alone: pip resolves no dependency at build time.
COPY requirements/production.txt requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/production.txt
COPY pyproject.toml README.md ./
COPY models models
COPY config config
COPY activities activities
COPY workflows workflows
COPY worker worker
COPY client client
COPY store store
COPY devstack devstack
RUN pip install --no-cache-dir --no-deps .
ENV REPLICANTE_HOME=/var/lib/replicante
ENTRYPOINT ["replicante"]
CMD ["worker"]

FROM replicante AS agent
# A static binary: it runs on this Debian image as it does on the Alpine one it comes from.
COPY --from=docker:28.3.3-cli /usr/local/bin/docker /usr/local/bin/docker
CMD ["agent", "--help"]
