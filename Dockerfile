FROM python:3.12-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY access ./access
COPY shop ./shop
COPY status_projector ./status_projector
COPY streams ./streams
COPY order_api ./order_api
COPY payment_worker ./payment_worker
COPY inventory_worker ./inventory_worker
COPY shopctl ./shopctl
COPY mcp_servers ./mcp_servers
COPY gateway ./gateway
COPY dashboard ./dashboard
RUN pip install --no-cache-dir .
# Each service of docker-compose.yml names its own command.
CMD ["python", "-m", "order_api"]
