# syntax=docker/dockerfile:1
# MONAI Label over gRPC in a container. The dependencies are the three pyprojects' (api/python,
# clients/python, the root); only torch is named here, to pick its CPU or CUDA wheel.
#
# CPU: docker build -t monailabel-grpc .
# GPU: docker build -t monailabel-grpc:gpu \
#          --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#          --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
# Run: docker run --rm -p 50051:50051 monailabel-grpc            (sample phantoms, radiology template)
#      docker run --rm --gpus all -p 50051:50051 -v "$PWD/studies:/data/studies" monailabel-grpc:gpu
# Arguments after the image name go to `monailabel start_server` (e.g. --conf models all); settings
# also come from MONAI_LABEL_* variables (`docker run IMAGE --help` lists them).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive

# A CUDA base image has no Python of its own: install the distribution's (3.10 or newer) and build the
# virtual environment with it, in this image, so that the interpreter the venv links to is here.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "$TORCH" --index-url "$TORCH_INDEX"

WORKDIR /src
# Dependencies first, from the pyprojects alone (with empty packages), so that a source change does
# not reinstall them; then the sources, over the same three distributions.
COPY pyproject.toml README.md ./
COPY monailabel/__init__.py monailabel/
COPY server/monailabel_server/__init__.py server/monailabel_server/
COPY api/python/pyproject.toml api/python/
COPY api/python/monailabel_api/__init__.py api/python/monailabel_api/
COPY clients/python/pyproject.toml clients/python/
RUN pip install ./api/python ./clients/python .
COPY api/python api/python
COPY clients/python clients/python
COPY monailabel monailabel
COPY server server
RUN pip install --no-deps --force-reinstall ./api/python ./clients/python . && pip check

# The app and the studies live outside the package: mount your own over /data/app and /data/studies.
RUN useradd --create-home --user-group monai && mkdir -p /data && chown monai:monai /data
USER monai
WORKDIR /data
ENV MONAI_LABEL_APP_DIR=/data/app MONAI_LABEL_STUDIES=/data/studies \
    MONAI_LABEL_GRPC_HOST=0.0.0.0 MONAI_LABEL_GRPC_PORT=50051
RUN monailabel apps --name radiology --download --output "$MONAI_LABEL_APP_DIR" \
    && monailabel datasets --output "$MONAI_LABEL_STUDIES" --labeled 6
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s \
    CMD monailabel-client --address "127.0.0.1:$MONAI_LABEL_GRPC_PORT" health --timeout 8
ENTRYPOINT ["monailabel", "start_server"]
