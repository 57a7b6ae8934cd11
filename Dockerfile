# The convscope image: GPU workers, and the MLflow server, TensorBoard and optuna-dashboard
# of docker-compose.yml (one image, so server and clients always run the same versions).
# CUDA-capable PyTorch base; pick another tag of https://hub.docker.com/r/pytorch/pytorch
# with --build-arg BASE_IMAGE=… (it must ship Python 3.11 or newer and torch 2.6 or newer).
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}
# extra pip flags: docker/local-images.sh builds on a base that already holds every dependency
ARG PIP_FLAGS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

RUN groupadd --gid 1000 convscope \
    && useradd --uid 1000 --gid convscope --create-home --shell /usr/sbin/nologin convscope \
    && mkdir -p /var/lib/convscope/runs/tensorboard /var/lib/convscope/mlflow-artifacts /etc/convscope /datasets \
    && chown -R convscope:convscope /var/lib/convscope

WORKDIR /opt/convscope
COPY pyproject.toml README.md __init__.py __main__.py ./
COPY cli ./cli
COPY search ./search
COPY analysis ./analysis
COPY train ./train
COPY pictures ./pictures
COPY servers ./servers
COPY tracking ./tracking
# the base image's torch satisfies torch>=2.6, so pip keeps its CUDA build
RUN python -m pip install ${PIP_FLAGS} ".[postgres]" && convscope --help > /dev/null

USER convscope
WORKDIR /home/convscope
CMD ["convscope", "--help"]
