# Stand-in for prom/prometheus:v2.53.1 (deploy/compose/local-images.yml, profile "observability"):
# Debian bookworm's Prometheus 2.42, because no image can be pulled here and Debian's mirror is the
# only source the build reaches. Same contract as the upstream image that docker-compose.yml relies
# on: the binary is the entry point and the compose file's flags replace CMD (config
# /etc/prometheus/prometheus.yml, mounted over the package's example; TSDB in /prometheus), it runs
# as a non-root user, and wget is there for the main file's health check (`wget -q --spider`; the
# upstream image has busybox's). The 2.42 -> 2.53 gap does not touch what deploy/prometheus uses
# (dns_sd_configs, static_configs, the HTTP API).
ARG DEBIAN_IMAGE=evp-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# The package's postinst creates the system user "prometheus". /prometheus belongs to it: a fresh
# named volume (prometheus-data) takes the owner of the image's directory, so the TSDB is writable.
# apt-get clean: the base keeps downloaded packages, ~75 MB here (the package pulls in ~220 MB of
# JavaScript for its web UI as well).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o prometheus -g prometheus /prometheus
VOLUME ["/prometheus"]
WORKDIR /prometheus
# hadolint ignore=DL3066
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
