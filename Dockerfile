# The gateway, the sync worker and the CLI share one image; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY store store
COPY sync sync
RUN pip install --no-cache-dir .
EXPOSE 8080
CMD ["creditgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
