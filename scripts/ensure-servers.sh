#!/usr/bin/env bash
# Makes sure the real servers the tests start privately are installed:
#   redis-server (Debian package redis-server), etcd (Debian package etcd-server),
#   initdb/postgres/pg_ctl (Debian package postgresql, under /usr/lib/postgresql/<ver>/bin).
# Missing ones are installed with apt-get. Debian's postinst scripts may start the system
# services on their default ports; we stop and disable them (the tests start their own
# instances on ephemeral loopback ports). Idempotent and fast when everything is present.
set -euo pipefail

log() { printf 'ensure-servers: %s\n' "$*"; }
die() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!! ensure-servers: ERROR: %s\n' "$*" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
  exit 1
}

# Newest /usr/lib/postgresql/<ver>/bin holding initdb, postgres and pg_ctl (empty if none).
pg_bindir() {
  local d best='' bestver=-1 ver
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" ]] || continue
    ver="${d#/usr/lib/postgresql/}"
    ver="${ver%%/*}"
    ver="${ver%%.*}"
    [[ "$ver" =~ ^[0-9]+$ ]] || ver=0
    if ((ver > bestver)); then
      bestver=$ver
      best=$d
    fi
  done
  if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 &&
    command -v pg_ctl >/dev/null 2>&1; then
    best="$(dirname "$(command -v postgres)")"
  fi
  printf '%s' "$best"
}

have_redis() { command -v redis-server >/dev/null 2>&1; }
have_etcd() { command -v etcd >/dev/null 2>&1; }
have_pg() { [[ -n "$(pg_bindir)" ]]; }
# The Redis Cluster topology (testkit/redis-cluster.ts) is made with redis-cli --cluster create.
have_redis_cli() { command -v redis-cli >/dev/null 2>&1; }

missing=()
have_redis || missing+=(redis-server)
have_etcd || missing+=(etcd-server)
have_pg || missing+=(postgresql)
have_redis_cli || missing+=(redis-tools)

if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null 2>&1 ||
    die "missing Debian package(s): ${missing[*]}, and apt-get is not available to install them"
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "missing Debian package(s): ${missing[*]}; not root and no sudo to install them"
    sudo=(sudo)
  fi
  log "installing Debian package(s): ${missing[*]}"
  # Keep Debian's postinst from starting the system services where we can: a policy-rc.d
  # that denies every start (honoured by invoke-rc.d). Removed again afterwards.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e "$policy" && -w /usr/sbin ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
  fi
  restore_policy() { if ((added_policy)); then rm -f "$policy"; fi; }
  trap restore_policy EXIT
  "${sudo[@]}" apt-get update -qq || log "apt-get update failed; trying the install anyway"
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/tmp/ensure-servers-apt.log 2>&1; then
    tail -n 30 /tmp/ensure-servers-apt.log >&2 || true
    die "apt-get install failed for: ${missing[*]} (full log: /tmp/ensure-servers-apt.log)"
  fi
  restore_policy
  trap - EXIT

  # Be tidy: the system services must not hold the default ports.
  for svc in redis-server etcd postgresql; do
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      "${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
      "${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
      "${sudo[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

have_redis || die "redis-server not found after install: Debian package redis-server is missing"
have_etcd || die "etcd not found after install: Debian package etcd-server is missing"
have_pg || die "initdb/postgres/pg_ctl not found after install: Debian package postgresql is missing"
have_redis_cli || die "redis-cli not found after install: Debian package redis-tools is missing"

pgbin="$(pg_bindir)"
log "redis-server: $(redis-server --version 2>&1 | head -n 1) ($(command -v redis-server))"
log "etcd: $(etcd --version 2>&1 | head -n 1) ($(command -v etcd))"
log "postgres: $("$pgbin/postgres" --version 2>&1 | head -n 1) ($pgbin)"
