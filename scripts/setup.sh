#!/usr/bin/env bash
# Gets a checkout ready for tests and demos: nats-server >= 2.10, node_modules,
# and the TypeScript build (dist/). Idempotent, and quick when all of it is
# already in place. Progress goes to stderr; works from any directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "setup: $*" >&2; }

# (a) nats-server >= 2.10 (the install script checks the version itself and
# does nothing when a good one is present).
bash scripts/install-nats-server.sh >&2

# (b) node_modules, when missing or older than the lock file.
if [ -f package-lock.json ]; then
  if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] \
     || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing node modules (npm ci)"
    if ! npm ci --no-audit --no-fund >&2; then
      # npm ci refuses a lock file that lacks entries npm itself considers
      # part of the tree (e.g. optional platform bindings left out by another
      # npm version). Install from the same lock without rewriting it.
      say "npm ci failed; falling back to npm install --no-save (package-lock.json is left as is)"
      npm install --no-save --no-audit --no-fund >&2
    fi
  else
    say "node modules up to date"
  fi
else
  if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] \
     || [ package.json -nt node_modules/.package-lock.json ]; then
    say "installing node modules (npm install)"
    npm install --no-audit --no-fund >&2
  else
    say "node modules up to date"
  fi
fi

# (c) build, unless nothing that goes into it changed since the last
# successful build.
stamp=dist/.build-stamp
inputs=(src bench test tsconfig.json package.json)
[ -f package-lock.json ] && inputs+=(package-lock.json)
existing=()
for p in "${inputs[@]}"; do [ -e "$p" ] && existing+=("$p"); done
if [ -f "$stamp" ] && [ -z "$(find "${existing[@]}" -newer "$stamp" -print -quit 2>/dev/null)" ] \
   && [ ! node_modules/.package-lock.json -nt "$stamp" ]; then
  say "build up to date"
else
  say "building (npm run build)"
  npm run --silent build >&2
  mkdir -p dist
  touch "$stamp"
fi
