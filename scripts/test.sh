#!/usr/bin/env bash
# The README's test command (`npm test`): makes sure the real servers the tests start are
# installed (or fails naming what is missing), then runs every test with Vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-servers.sh
exec npx vitest run "$@"
