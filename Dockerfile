# stylebot on an NVIDIA GPU (or on the CPU). Build: docker build -t stylebot .
# Run:   docker run --init --gpus all --env-file .env -v stylebot-data:/data --stop-timeout 30 stylebot
# CPU-only variant (about a tenth of the size; torch from PyTorch's CPU index, which the image's
# builder must reach): docker build --build-arg TORCH=cpu -t stylebot:cpu .
#
# One CUDA stack: the base is plain Python, and CUDA comes from the torch wheel's own nvidia-*
# packages in the lock (CUDA 13.0 for torch 2.14.1). The host needs only the NVIDIA driver
# (580 or newer, the first to run CUDA 13.0) and the NVIDIA Container Toolkit.
#
# Layers, from the rarely to the often changed: the base, the user, the dependencies (gigabytes;
# rebuilt only when requirements/docker.txt or TORCH changes), the project (a few MB; a source
# change rebuilds only this). The requirements and the source are bind-mounted into the steps that
# install them (BuildKit, Docker's default builder), so neither lands in a layer of its own.
#
# The digest is the multi-platform index of python:3.11-slim-bookworm (Python 3.11.16, Debian 12)
# as recorded by Docker's official-images log, docker-library/repo-info,
# repos/python/remote/3.11-slim-bookworm.md at commit 33a22f41ac7b (linux/amd64 manifest
# sha256:2fc9207f64226cb05ac317cee0bab6fa55a9ea311ce5a086baddd4b4a83c2d3c). It was not pulled
# from a registry here. Update it together with requirements/docker.txt.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 stylebot \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin stylebot \
 && mkdir /data \
 && chown stylebot:stylebot /data

# /data keeps the job journal and the style cache (bounded, NST_STYLE_CACHE_MAX_MB) across
# restarts; mount a volume there. NVIDIA_DRIVER_CAPABILITIES: CUDA (compute) for torch and NVML
# (utility) for Ray's GPU detection, whatever the toolkit's default.
ENV PATH=/opt/stylebot/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    STYLEBOT_DATA_DIR=/data \
    NST_STYLE_CACHE=/data/style-cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# cuda: torch's CUDA wheels from PyPI, hash-checked (the default). cpu: torch and torchvision
# from PyTorch's CPU index (same versions, "+cpu"), everything else from the same hashed lock.
ARG TORCH=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Every third-party file is pinned and hash-checked (a dependency missing from the lock fails the
# build), except the CPU variant's torch and torchvision, which pip checks against the hashes
# PyTorch's index publishes. Wheels only: nothing is compiled, nothing needs a compiler.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=bind,source=requirements/docker.txt,target=/tmp/docker.txt \
    python -m venv /opt/stylebot \
 && case "$TORCH" in \
      cuda) pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/docker.txt ;; \
      cpu) awk '/^[a-z0-9]/ { skip = /^(torch|torchvision|triton|nvidia-|cuda-)/ } !skip' \
             /tmp/docker.txt > /tmp/docker-cpu.txt \
        && pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/docker-cpu.txt \
        && sed -n 's/^\(torch\|torchvision\)==\([^ ]*\).*/\1==\2+cpu/p' /tmp/docker.txt \
             > /tmp/torch-cpu.txt \
        && pip install --no-deps --only-binary=:all: --index-url "$TORCH_CPU_INDEX" \
             -r /tmp/torch-cpu.txt \
        && rm /tmp/docker-cpu.txt /tmp/torch-cpu.txt ;; \
      *) echo "TORCH must be cuda or cpu, not '$TORCH'" >&2; exit 2 ;; \
    esac

# The project itself, built with the locked setuptools (it adds no dependency; `pip check` fails
# the build if the lock misses one). The source is mounted read-write so that the build's own
# files (build/, *.egg-info) stay out of the image.
RUN --mount=type=bind,target=/src,rw \
    pip install --no-deps --no-build-isolation /src \
 && pip check \
 && python -c "import bot.app, nst_engine.pool"

VOLUME /data
USER 10001:10001
WORKDIR /home/stylebot
# Healthy while the bot is logged in to Discord and its event loop answers (a heartbeat file in
# /data that `stylebot --check` reads). compose.yaml gives the Ray head and painters their own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["stylebot", "--check"]
# Exec form: stylebot gets SIGTERM from `docker stop` (with --init, through a tiny init that also
# reaps the painters' orphans), then shuts down cleanly.
ENTRYPOINT ["stylebot"]
