#!/usr/bin/env bash
# Make sure the services the integration tests use answer on loopback: MariaDB on 3306 (root,
# empty password) and Redis on 6379. Each is started only if it does not answer already, then
# waited for, at most WAIT_SECONDS each. Exits non-zero if one still does not answer.
set -euo pipefail

WAIT_SECONDS=${WAIT_SECONDS:-30}

mariadb_answers() {
    mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping \
        >/dev/null 2>&1
}

redis_answers() {
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
}

start_mariadb() {
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

start_redis() {
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

# wait_for NAME CHECK: poll CHECK every half second until it succeeds or WAIT_SECONDS pass.
wait_for() {
    local name=$1 check=$2 tries=$((WAIT_SECONDS * 2))
    while ! "$check"; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "services: $name does not answer after ${WAIT_SECONDS}s" >&2
            return 1
        fi
        sleep 0.5
    done
    echo "services: $name answers"
}

ensure() {
    local name=$1 check=$2 start=$3
    if ! "$check"; then
        echo "services: starting $name"
        "$start"
    fi
    wait_for "$name" "$check"
}

ensure MariaDB mariadb_answers start_mariadb
ensure Redis redis_answers start_redis

# nginx (with its stream module) for the cluster tests: installed from Debian's packages.
if ! command -v nginx >/dev/null 2>&1 || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    echo "services: installing nginx-light and libnginx-mod-stream"
    if [ "$(id -u)" -ne 0 ]; then
        echo "services: run as root, or: sudo apt-get install -y nginx-light libnginx-mod-stream" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-stream >/dev/null
fi
echo "services: nginx $(nginx -v 2>&1 | cut -d/ -f2)"

# Chromium for the browser tests of the web page (driven by Playwright, which gets no browser
# download: it uses Debian's /usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
    echo "services: installing chromium"
    if [ "$(id -u)" -ne 0 ]; then
        echo "services: run as root, or: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "services: $(chromium --version 2>/dev/null)"
