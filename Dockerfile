# syntax=docker/dockerfile:1
# GPU build: docker build --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 --build-arg TORCH="torch" .
ARG BASE=python:3.11-slim
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"

FROM python:3.11-slim AS build
ARG TORCH
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# dependencies first, so that source changes do not reinstall them
RUN pip install $TORCH
COPY pyproject.toml README.md ./
RUN mkdir -p monailabel server/monailabel_server clients/python/monailabel_client \
    && pip install "monai>=1.3,<1.7" "pytorch-ignite>=0.4.11" "grpcio>=1.85.1" "grpcio-health-checking>=1.85.1" \
       "grpcio-reflection>=1.85.1" "protobuf>=7.35.1,<8" "nibabel>=5" "numpy>=1.24" "pynrrd>=1.0" "pydicom>=2.4" "tqdm"
COPY monailabel monailabel
COPY server server
COPY clients clients
RUN pip install --no-deps .

FROM ${BASE} AS runtime
RUN useradd --create-home --uid 1000 monai
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER monai
WORKDIR /home/monai
RUN cp -r /opt/venv/lib/python3.11/site-packages/monailabel/apps/radiology app \
    && monailabel datasets --output studies --if-empty
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:50051'); assert g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=4).status == h.HealthCheckResponse.SERVING"]
ENTRYPOINT ["monailabel", "start_server", "--app", "app", "--studies", "studies", "--host", "0.0.0.0", "--port", "50051"]
