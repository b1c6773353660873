# Serving image: torchkfp.images.SERVING_IMAGE
# (DEFAULT_SERVING_IMAGE = us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-serve:0.1.0).
# Vertex AI custom-container contract: the model folder comes from AIP_STORAGE_URI (gs://,
# downloaded at startup), the port from AIP_HTTP_PORT (8080), the routes from AIP_HEALTH_ROUTE
# and AIP_PREDICT_ROUTE (/health, /predict). See src/torchkfp/serving/.
#
# Build from the repository root:
#   docker build -f docker/serve.Dockerfile -t us-docker.pkg.dev/PROJECT/torchkfp/torchkfp-serve:0.1.0 .
# Run locally against a model folder:
#   docker run -p 8080:8080 -v "$PWD/.data/registry/flights-delay/versions/1:/model:ro" \
#     -e AIP_STORAGE_URI=/model us-docker.pkg.dev/PROJECT/torchkfp/torchkfp-serve:0.1.0
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIP_HTTP_PORT=8080 \
    TORCHKFP_TORCH_THREADS=1

# CPU-only torch (serving replicas are CPU machines), then the project.
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/torchkfp
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install . && rm -rf /opt/torchkfp/build

RUN useradd --create-home --uid 1000 torchkfp
USER torchkfp
WORKDIR /home/torchkfp

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AIP_HTTP_PORT', '8080') + os.environ.get('AIP_HEALTH_ROUTE', '/health'), timeout=4)" || exit 1

# No --model: serves AIP_STORAGE_URI; no --port: listens on AIP_HTTP_PORT.
CMD ["torchkfp", "serve", "--host", "0.0.0.0"]
