# Project image for the cloud side: `pipeline bridge` and `pipeline cloud` (the Faust worker)
# (and `pipeline history`, `pipeline console`) are this one image with different commands
# (docker-compose.yml). Only the `cloud` extra (which holds the console's web stack) is
# installed; camera nodes use Dockerfile.edge. No secret is read at build time: every
# setting comes from PIPELINE_* environment variables when the container starts.
#
#   docker build -t edge-vision-pipeline:0.1.0 .
#   docker run --rm edge-vision-pipeline:0.1.0 bridge --help

# Base image: the official Python image by default. A site that cannot pull it builds its own
# (deploy/local-images/build-base-images.sh: Debian bookworm by debootstrap + Debian's Python
# 3.11) and passes --build-arg PYTHON_IMAGE=evp-local/python:3.11-bookworm.
# Classic builder compatible (no BuildKit-only syntax): Debian's docker.io has no buildx.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a venv with the app
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Wheels: from the registry (PyPI) by default, found first in the wheelhouse when it holds any
# (deploy/wheelhouse/, empty but for its README unless filled). Air-gapped sites fill it on a
# host that reaches PyPI (deploy/local-images/make-wheelhouse.sh: `pip wheel`) and build with
# --build-arg WHEELHOUSE_ONLY=true: `pip install --no-index`, nothing fetched.
ARG WHEELHOUSE=deploy/wheelhouse
ARG WHEELHOUSE_ONLY=false
COPY ${WHEELHOUSE} /wheels
# The pinned dependencies first, in a layer of their own (read from pyproject.toml): a change to
# pipeline/ then rebuilds only the small layer below (seconds), not ~1 GB of wheels (minutes).
COPY pyproject.toml ./
RUN if [ "$WHEELHOUSE_ONLY" = true ]; then set -- --no-index; fi \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project'];\
 print(chr(10).join(p['dependencies'] + p['optional-dependencies']['cloud']))" >/tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt --find-links /wheels "$@"
COPY README.md ./
COPY pipeline ./pipeline
# The project itself as a wheel, installed in the runtime stage over the dependencies' venv: the
# venv layer (~2.5 GB with TensorFlow, minutes to copy) stays cached when only the code changes.
RUN if [ "$WHEELHOUSE_ONLY" = true ]; then set -- --no-index; fi \
 && /opt/venv/bin/pip wheel --no-deps --find-links /wheels "$@" --wheel-dir /dist .

# ---------------------------------------------------------------- runtime: venv + non-root user
FROM ${PYTHON_IMAGE} AS runtime
# libgl1/libglib2.0-0: opencv-contrib-python (crop decoding) links against them.
# Debian package versions are not pinned: the slim base moves with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pipeline \
 && useradd --system --uid 10001 --gid pipeline --create-home --home-dir /home/pipeline \
      --shell /usr/sbin/nologin pipeline
COPY --from=build /opt/venv /opt/venv
COPY --from=build /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl \
 && /opt/venv/bin/pip check \
 && rm -rf /tmp/dist
# chmod in a RUN, not COPY --chmod: the classic builder (no BuildKit) refuses --chmod.
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY deploy/healthcheck.py /usr/local/bin/pipeline-healthcheck
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh /usr/local/bin/pipeline-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIPELINE_CLOUD__DATA_DIR=/home/pipeline/faust \
    PIPELINE_LOCAL__RUN_DIR=/home/pipeline/run
USER 10001:10001
WORKDIR /home/pipeline
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["--help"]
