# Stand-in for eclipse-mosquitto:2 (deploy/compose/local-images.yml): Debian's Mosquitto 2.0.11
# with the same paths (/mosquitto/config, /mosquitto/data, /mosquitto/auth) and the same start
# command, so docker-compose.yml's mounts, make-passwd.sh and health check work unchanged.
# Started as root, Mosquitto drops to the user "mosquitto" (as the Eclipse image's does).
ARG DEBIAN_IMAGE=evp-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o mosquitto -g mosquitto /mosquitto/config /mosquitto/data /mosquitto/auth /mosquitto/log
EXPOSE 1883
VOLUME ["/mosquitto/data"]
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
