# Training + component image: torchkfp.images.TRAINING_IMAGE
# (DEFAULT_TRAINING_IMAGE = us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-train:0.1.0).
# Every KFP component of the pipeline runs in it (install_kfp_package=False: kfp comes with the
# project), and so does the DDP training job (torchrun, one process per GPU).
#
# Build from the repository root (CUDA wheels by default; CPU-only with the cpu index):
#   docker build -f docker/train.Dockerfile -t us-docker.pkg.dev/PROJECT/torchkfp/torchkfp-train:0.1.0 .
#   docker build -f docker/train.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t ... .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the chosen index, in its own layer (large, changes rarely); the project's
# torch>=2.4 requirement is then already satisfied and pip installs no other torch.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/torchkfp
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install . && rm -rf /opt/torchkfp/build

RUN useradd --create-home --uid 1000 torchkfp
USER torchkfp
WORKDIR /home/torchkfp

CMD ["python"]
