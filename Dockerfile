# The gateway, the sync worker and the CLI share one image; docker-compose.yml and the
# Kubernetes manifests (deploy/kubernetes/) pick the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY store store
COPY sync sync
RUN pip install --no-cache-dir '.[otel]' \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin creditgate
# Nothing of the image is writable by the process: a SQLite store belongs on a volume.
USER 10001
EXPOSE 8080
# Liveness of `creditgate serve` (other commands set their own or none, see compose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["creditgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
