# Stand-in for python:3.11-slim-bookworm where no image can be pulled: Debian's own Python 3.11
# on the debootstrap'ed bookworm base (build-base-images.sh). The project's Dockerfiles need
# `python -m venv` and apt-get; both work here (apt-get through the build's host network).
ARG DEBIAN_IMAGE=evp-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python"]
