#!/bin/sh
# Make sure a Docker engine answers: if `docker info` fails and we are root, start Debian's dockerd
# the way it works on these build machines (no iptables rules: the machine's firewall is not ours
# to change; published ports still work through docker-proxy) and wait up to 60 s for it.
# Exit 0 when an engine answers; otherwise 1 with the reason on stderr. The daemon keeps running
# (like a system service; image layers stay cached for the next run). Log: /var/log/evp-dockerd.log.
set -u
if docker info >/dev/null 2>&1; then echo "start-dockerd: a Docker engine answers"; exit 0; fi
command -v dockerd >/dev/null 2>&1 || { echo "start-dockerd: no dockerd (apt-get install docker.io)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "start-dockerd: no Docker engine answers and starting dockerd needs root" >&2; exit 1; }
log=/var/log/evp-dockerd.log
echo "start-dockerd: starting dockerd --iptables=false --ip-masq=false (log $log)"
nohup dockerd --iptables=false --ip-masq=false >>"$log" 2>&1 &
i=0
while [ $i -lt 60 ]; do
  if docker info >/dev/null 2>&1; then echo "start-dockerd: dockerd is up"; exit 0; fi
  if ! kill -0 $! 2>/dev/null; then break; fi
  sleep 1; i=$((i + 1))
done
echo "start-dockerd: dockerd did not come up; last lines of $log:" >&2
tail -n 15 "$log" >&2
exit 1
