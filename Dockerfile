# stylebot on an NVIDIA GPU (or on the CPU). Build: docker build -t stylebot .
# Run:   docker run --gpus all --env-file .env -v stylebot-data:/data --stop-timeout 30 stylebot
#
# One CUDA stack: the base is plain Python, and CUDA comes from the torch wheel's own nvidia-*
# packages in the lock (CUDA 13.0 for torch 2.14.1). The host needs only the NVIDIA driver
# (580 or newer, the first to run CUDA 13.0) and the NVIDIA Container Toolkit.
#
# The digest is the multi-platform index of python:3.11-slim-bookworm (Python 3.11.16, Debian 12)
# as recorded by Docker's official-images log, docker-library/repo-info,
# repos/python/remote/3.11-slim-bookworm.md at commit 33a22f41ac7b (linux/amd64 manifest
# sha256:2fc9207f64226cb05ac317cee0bab6fa55a9ea311ce5a086baddd4b4a83c2d3c). It was not pulled
# from a registry here. Update it together with requirements/docker.txt.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/stylebot
ENV PATH=/opt/stylebot/bin:$PATH
WORKDIR /src
# Every third-party file is pinned and hash-checked (a dependency missing from the lock fails the
# build); the project itself is then built with the locked setuptools and adds nothing.
COPY requirements/docker.txt requirements/docker.txt
RUN pip install --require-hashes -r requirements/docker.txt
COPY pyproject.toml README.md ./
COPY nst_engine ./nst_engine
COPY bot ./bot
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && python -c "import bot.app, nst_engine.pool"

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin stylebot \
 && mkdir /data \
 && chown stylebot:stylebot /data
COPY --from=build /opt/stylebot /opt/stylebot
# /data keeps the job journal and the style cache (bounded, NST_STYLE_CACHE_MAX_MB) across
# restarts; mount a volume there.
ENV PATH=/opt/stylebot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STYLEBOT_DATA_DIR=/data \
    NST_STYLE_CACHE=/data/style-cache
VOLUME /data
USER stylebot
WORKDIR /home/stylebot
# Exec form: stylebot is PID 1 and gets SIGTERM from `docker stop`, then shuts down cleanly.
ENTRYPOINT ["stylebot"]
