# stylebot on an NVIDIA GPU. Build: docker build -t stylebot .
# Run:   docker run --gpus all --env-file .env --stop-timeout 30 stylebot
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/stylebot
ENV PATH=/opt/stylebot/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nst_engine ./nst_engine
COPY bot ./bot
RUN pip install . && python -c "import bot.app, nst_engine.pool"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin stylebot
COPY --from=build /opt/stylebot /opt/stylebot
ENV PATH=/opt/stylebot/bin:$PATH \
    PYTHONUNBUFFERED=1
USER stylebot
WORKDIR /home/stylebot
# Exec form: stylebot is PID 1 and gets SIGTERM from `docker stop`, then shuts down cleanly.
ENTRYPOINT ["stylebot"]
