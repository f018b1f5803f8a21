# GPU serving image: CUDA runtime, vLLM's CUDA build (the `gpu` extra), `wattserve serve` as entry point.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN pip install --upgrade pip && pip install ".[gpu]"

EXPOSE 8000
ENTRYPOINT ["wattserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
