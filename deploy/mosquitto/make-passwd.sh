#!/bin/sh
# Write Mosquitto's password file from the environment, so no password is in the repository or
# an image. Run by the mosquitto-passwd init service of docker-compose.yml before the broker
# starts; also works on a host with mosquitto_passwd installed:
#   MQTT_BRIDGE_PASSWORD=... MQTT_EDGE_USERS="node-1:pw1" deploy/mosquitto/make-passwd.sh ./passwd
#
# Environment:
#   MQTT_BRIDGE_PASSWORD   required  password of user "bridge" (every bridge instance)
#   MQTT_ALERTS_PASSWORD   optional  password of user "alerts" (read-only alert subscribers)
#   MQTT_CONSOLE_PASSWORD  optional  password of user "console" (`pipeline console`, read-only on MQTT)
#   MQTT_EDGE_USERS        optional  space-separated node:password pairs, one per camera node
#                                    (the node's user name is its edge.node_id; see ./acl)
# Output: $1 (default /mosquitto/auth/passwd), mode 0600, hashed (PBKDF2-SHA512), plus
# healthcheck.pw next to it: a random password of user "healthcheck" (made once, then reused) for the container's
# health check. Passwords never appear on a command line: the file is written in plain text
# with umask 077 and hashed in place (mosquitto_passwd -U).
set -eu

out=${1:-/mosquitto/auth/passwd}
dir=$(dirname "$out")
mkdir -p "$dir"
umask 077

: "${MQTT_BRIDGE_PASSWORD:?set MQTT_BRIDGE_PASSWORD (see .env.example)}"

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: >"$tmp"

add_user() {
  case "$1" in
    "" | *:* | *" "*) echo "make-passwd: bad user name '$1'" >&2; exit 2 ;;
  esac
  if [ -z "$2" ]; then echo "make-passwd: empty password for '$1'" >&2; exit 2; fi
  printf '%s:%s\n' "$1" "$2" >>"$tmp"
}

add_user bridge "$MQTT_BRIDGE_PASSWORD"
if [ -n "${MQTT_ALERTS_PASSWORD:-}" ]; then add_user alerts "$MQTT_ALERTS_PASSWORD"; fi
if [ -n "${MQTT_CONSOLE_PASSWORD:-}" ]; then add_user console "$MQTT_CONSOLE_PASSWORD"; fi
for pair in ${MQTT_EDGE_USERS:-}; do
  add_user "${pair%%:*}" "${pair#*:}"
done
# Kept across runs: `docker compose up` starts this one-shot job again (e.g. when scaling), and a
# new password here would not match the file the running broker loaded -> health check refused
# (seen in tests/compose). The users from .env keep theirs as long as .env does.
if [ -s "$dir/healthcheck.pw" ]; then
  health=$(cat "$dir/healthcheck.pw")
else
  health=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
add_user healthcheck "$health"

mosquitto_passwd -U "$tmp"
mv "$tmp" "$out"
printf '%s' "$health" >"$dir/healthcheck.pw"
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown mosquitto:mosquitto "$out" "$dir/healthcheck.pw"
fi
echo "make-passwd: wrote $(wc -l <"$out") users to $out"
