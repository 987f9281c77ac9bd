#!/bin/sh
# Entry point of the project image: `pipeline "$@"`.
# Replicas of a scaled service (docker compose up --scale bridge=2) share one environment, but
# each bridge needs its own MQTT client id: unless one is set, derive it from the container's
# host name (its short id), which is unique.
set -eu
if [ -z "${PIPELINE_BRIDGE__CLIENT_ID:-}" ]; then
  PIPELINE_BRIDGE__CLIENT_ID="bridge-$(hostname)"
  export PIPELINE_BRIDGE__CLIENT_ID
fi
exec pipeline "$@"
