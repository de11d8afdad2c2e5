#!/usr/bin/env bash
# Makes sure a Redis server is reachable and prints its URL on stdout (messages go to stderr).
# 1. QUASAR_REDIS_URL, when set and reachable.
# 2. Otherwise a local redis-server on QUASAR_LOCAL_REDIS_PORT (default 6390), started here if needed;
#    Debian's redis-server is installed first where it is missing and we are root.
# The test suite needs the redis-server binary too: its fixtures start throwaway servers on free ports.
set -euo pipefail
port="${QUASAR_LOCAL_REDIS_PORT:-6390}"

ping() {  # ping URL -> 0 when a Redis answers PING there
  .venv/bin/python - "$1" <<'PY' 2>/dev/null
import sys, redis
try:
    sys.exit(0 if redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping() else 1)
except Exception:
    sys.exit(1)
PY
}

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing: installing Debian's redis-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  else
    echo "error: redis-server is not installed. Install it (e.g. 'sudo apt-get install redis-server')" \
         "or set QUASAR_REDIS_URL to a reachable Redis." >&2
    exit 1
  fi
fi

if [ -n "${QUASAR_REDIS_URL:-}" ]; then
  if ping "$QUASAR_REDIS_URL"; then echo "$QUASAR_REDIS_URL"; exit 0; fi
  echo "QUASAR_REDIS_URL=$QUASAR_REDIS_URL is not reachable: starting a local redis-server instead" >&2
fi

url="redis://127.0.0.1:${port}/0"
if ! ping "$url"; then
  mkdir -p .quasar
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
               --dir "$PWD/.quasar" --logfile "$PWD/.quasar/redis-${port}.log" >&2
  for _ in $(seq 1 50); do ping "$url" && break; sleep 0.1; done
  ping "$url" || { echo "error: started redis-server on port $port but it does not answer" >&2; exit 1; }
  echo "started a local redis-server at $url" >&2
fi
echo "$url"
