# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): cleanup of what they start, the builds,
# free loopback ports, process memory and UDP readiness. The sourcing script sets `ROOT` (the
# repository) and `-euo pipefail`, and names its temp dir's prefix in `WORK_PREFIX`.

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# The summaries' python reads the driver's results with benches/results.py.
export PYTHONPATH=$ROOT/benches${PYTHONPATH:+:$PYTHONPATH}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf '\n== %s\n' "$*" >&2; }

# --- processes and temp dirs, cleaned up whatever happens -----------------------------------
# Every process started goes into PIDS; on any exit each is sent TERM, given 5 s, then KILL,
# and the temp dir WORK is removed.
PIDS=()
WORK=$(mktemp -d "/tmp/${WORK_PREFIX:-ravpnd-bench}.XXXXXX")
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ -n "${QUOTA_CGROUP:-}" ] && rmdir "$QUOTA_CGROUP" 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PID: stops one process started here (TERM, waited for) and forgets it, so cleanup never
# signals a PID the system may have given to another process since.
stop_pid() {
  local pid=$1 kept=() p
  kill -TERM "$pid"
  wait "$pid" || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# Builds ravpnd (release) and the load driver (bench profile); sets RAVPND and LOAD.
build_ravpnd_and_driver() {
  say "building ravpnd (release) and the load driver (bench profile)"
  cargo build --release --bin ravpnd >&2
  # shellcheck disable=SC2034 # used by the sourcing script
  RAVPND=$CARGO_TARGET_DIR/release/ravpnd
  LOAD=$(cargo bench --bench load --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load" and m.get("executable"):
        print(m["executable"])')
  [ -x "$LOAD" ] || { echo "could not build the load driver" >&2; exit 1; }
}

# --- the load driver and where it runs ---------------------------------------------------------
# The scripts measure throughput twice: with the driver (THREADS threads) and the servers sharing
# every CPU, and "split", each server alone on CPU 1 and the driver (one thread) on CPU 0, so
# that the driver's work and wake-ups do not take the server's CPU (docs/PERFORMANCE.md, run Q).
# `split_check` sets SPLIT: 1 unless the caller set 0, or the machine has one CPU or no taskset
# (util-linux).
split_check() {
  SPLIT=${SPLIT:-1}
  if [ "$SPLIT" = 1 ] && { [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; }; then
    echo "split placement skipped: it needs two CPUs and taskset (util-linux)" >&2
    SPLIT=0
  fi
}

# ARGS...: the load driver, on CPU $DRIVE_CPU alone with one thread when that is set, else
# anywhere with THREADS threads.
load() {
  if [ -n "${DRIVE_CPU:-}" ]; then
    taskset -c "$DRIVE_CPU" "$LOAD" --threads 1 "$@"
  else
    "$LOAD" --threads "$THREADS" "$@"
  fi
}

# ROUND ITEM...: the items one per line in the order round ROUND (from 1) runs them: as given
# in odd rounds, reversed in even ones (A B C, C B A, A B C, ...). Run in a fixed order, a
# drift of the machine during a round (other load, clock and heat, caches warming) would fall
# on the same item every time; alternated, each pair of rounds gives every item the same mean
# position. The scripts print each round's order; the JSON lines are in the order run.
in_round_order() {
  local round=$1 i
  shift
  if (( round % 2 )); then
    printf '%s\n' "$@"
  else
    for (( i = $#; i >= 1; i-- )); do printf '%s\n' "${!i}"; done
  fi
}

# CPUS PID...: moves every thread of each process to CPUS (e.g. `1`), noting first the CPUs
# each thread had; `pin all PID...` gives every thread every CPU back, then each noted thread
# what it had — ravpnd's workers, pinned one per CPU by the daemon (`[radius] pin_workers`),
# return to their own CPUs.
pin() {
  local cpus=$1 pid t tid list
  shift
  for pid in "$@"; do
    if [ "$cpus" = all ]; then
      taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$pid" >/dev/null
      if [ -f "$WORK/affinity-$pid" ]; then
        while read -r tid list; do
          taskset -p -c "$list" "$tid" >/dev/null 2>&1 || true # the thread may have ended
        done < "$WORK/affinity-$pid"
        rm -f "$WORK/affinity-$pid"
      fi
    else
      if [ ! -f "$WORK/affinity-$pid" ]; then
        for t in /proc/"$pid"/task/*; do
          tid=${t##*/}
          echo "$tid $(taskset -p -c "$tid" | sed 's/.*: //')"
        done > "$WORK/affinity-$pid"
      fi
      taskset -a -p -c "$cpus" "$pid" >/dev/null
    fi
  done
}

# PERCENT PID: holds the process to PERCENT of one CPU with a cgroup CPU quota (a 10 ms period,
# so that it runs in short slices, not in bursts a fraction of a second apart); `cpu_quota off
# PID` moves it back and removes the group. Fails (status 1, a message) where this machine has
# no writable cgroup cpu controller (v1 at /sys/fs/cgroup/cpu, or v2 with `cpu` enabled).
cpu_quota() {
  local percent=$1 pid=$2 root
  if [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
    root=/sys/fs/cgroup/cpu
  elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null && [ -w /sys/fs/cgroup/cgroup.procs ]; then
    root=/sys/fs/cgroup
  else
    echo "no writable cgroup cpu controller: the daemon runs without a CPU quota" >&2
    return 1
  fi
  if [ "$percent" = off ]; then
    echo "$pid" > "$root/cgroup.procs"
    rmdir "$QUOTA_CGROUP" && QUOTA_CGROUP=
    return 0
  fi
  QUOTA_CGROUP=$root/${WORK_PREFIX:-ravpnd-bench}-$$
  mkdir "$QUOTA_CGROUP" || { QUOTA_CGROUP=; return 1; }
  if [ -e "$QUOTA_CGROUP/cpu.max" ]; then
    echo "$((percent * 100)) 10000" > "$QUOTA_CGROUP/cpu.max"
  else
    echo 10000 > "$QUOTA_CGROUP/cpu.cfs_period_us"
    echo "$((percent * 100))" > "$QUOTA_CGROUP/cpu.cfs_quota_us"
  fi
  echo "$pid" > "$QUOTA_CGROUP/cgroup.procs"
}

# Free loopback ports asked of the kernel (never guessed, never 1812), one per argument:
# `udp` or `tcp`. Prints them on one line.
free_ports() {
  python3 - "$@" <<'PY'
import socket, sys
socks, ports = [], []
for kind in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0)); socks.append(s); ports.append(str(s.getsockname()[1]))
print(" ".join(ports))
PY
}

# The benchmark daemon's config, on stdout: local users, one client (127.0.0.1) requiring
# Message-Authenticator, registration without mail, log at warn.
# DIR (the store is DIR/data) RADIUS_PORT ADMIN_PORT RADIUS_EXTRA (lines for [radius]) EXTRA_TOML
bench_config() {
  cat <<EOF
[radius]
auth_addr = "127.0.0.1:$2"
$4

[store]
path = "$1/data"

[admin]
addr = "127.0.0.1:$3"

[auth]
source = "local"

[auth.local]
# The users are imported with cheap hashes (need_cheap_hash_tools): kept so, not replaced
# at their first login by hashes with the daemon's parameters.
upgrade_imported_hashes = false

[registration]
auto_register = true
notify_on_failure = false

[log]
# warn, not info: one info line per request would dominate the measurement.
level = "warn"

[[clients]]
name = "bench"
address = "127.0.0.1"
secret = "$SECRET"
require_message_authenticator = true
$5
EOF
}

# python3 with argon2-cffi (installed with pip when missing) for cheap benchmark hashes, and
# curl for the daemon's /metrics.
need_cheap_hash_tools() {
  command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
  command -v curl >/dev/null || { echo "curl is needed (the daemon's /metrics)" >&2; exit 1; }
  if ! python3 -c 'import argon2' 2>/dev/null; then
    say "installing argon2-cffi (pip) for the cheap benchmark hashes"
    python3 -m pip install -q argon2-cffi >&2
  fi
}

rss() { sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$1/status" 2>/dev/null || echo 0; }

# CONF UDP_PORT: until the daemon started with CONF listens on UDP_PORT and its admin API
# says ready (`/readyz` at the address it records in its store, CONF's directory's data/ as
# bench_config writes it). Not a CLI listing: `user list` of a 100,000-user store would
# decode every record and weigh in the daemon's measured memory.
wait_ravpnd() {
  wait_udp "$2" || return 1
  local addr_file
  addr_file="$(dirname "$1")/data/admin.addr"
  for _ in $(seq 100); do
    [ -s "$addr_file" ] &&
      curl -sf --max-time 2 "http://$(cat "$addr_file")/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the daemon of $1 does not answer on its admin API" >&2; return 1
}

# CONF ADMIN_PORT: the daemon's /metrics (the admin token is in <store.path>/admin.token, the
# store being CONF's directory's data/ as bench_config writes it).
metrics() {
  local token
  token=$(cat "$(dirname "$1")/data/admin.token" 2>/dev/null || true)
  curl -s --max-time 10 -H "Authorization: Bearer $token" "http://127.0.0.1:$2/metrics"
}

wait_udp() { # PORT: until something listens there
  for _ in $(seq 100); do
    ss -Hlun "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  echo "nothing listens on udp $1" >&2; return 1
}

# BEFORE AFTER [RESULTS] (two /metrics scrapes): the daemon's own view of the requests between
# them, from its histograms — the socket wait (`ravpnd_request_queue_seconds`) and arrival to
# response (`ravpnd_request_duration_seconds`): count, the bucket bounds holding p50 / p99 /
# p99.9, and the share answered within 1 ms. One line; says what the driver's figures cannot:
# how much of a tail is in the daemon. With RESULTS, the driver's report on its last line
# (`received_total`: every answer it got, warm-up included) is set against the daemon's count
# of responses made: equal when the window holds the whole run.
daemon_latency() {
  python3 - "$@" <<'PY'
import json, re, sys
def buckets(path):
    b = {}
    for line in open(path):
        m = re.match(r'ravpnd_request_(queue|duration)_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            b.setdefault(m.group(1), {})[float(m.group(2))] = float(m.group(3))
    return b
before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
def bound(le):
    return "inf" if le == float("inf") else (f"{le * 1e6:.0f} µs" if le < 1e-3 else f"{le * 1e3:g} ms")
parts = []
for name, text in (("queue", "socket wait"), ("duration", "arrival to response")):
    h = {le: n - before.get(name, {}).get(le, 0) for le, n in after.get(name, {}).items()}
    total = h.get(float("inf"), 0)
    if not total:
        parts.append(f"{text}: no requests")
        continue
    q = lambda p: bound(min(le for le, n in h.items() if n >= p * total))
    parts.append(f"{text} ({total:.0f}): p50 ≤ {q(0.5)}, p99 ≤ {q(0.99)}, p99.9 ≤ {q(0.999)}, "
                 f"{100 * h.get(0.001, 0) / total:.2f} % within 1 ms")
if len(sys.argv) > 3:
    lines = [l for l in open(sys.argv[3]) if l.strip()]
    got = json.loads(lines[-1]).get("received_total") if lines else None
    made = after.get("duration", {}).get(float("inf"), 0) - before.get("duration", {}).get(float("inf"), 0)
    if got is None:
        parts.append("the driver did not report its answers received")
    elif made >= got:
        parts.append(f"the driver received {got} answers (warm-up included): all in the daemon's window")
    else:
        parts.append(f"the driver received {got} answers (warm-up included): {got - made:.0f} NOT in the "
                     "daemon's window (scraped before they were recorded)")
print("; ".join(parts))
PY
}

# CONF ADMIN_PORT OUT COMMAND...: runs COMMAND between two scrapes of that daemon's /metrics
# and writes daemon_latency's line for the requests in between to OUT. COMMAND runs in the
# foreground: the "after" scrape waits for it, and the driver exits only once every request
# it sent is answered or timed out (benches/load/client.rs), while the daemon records a
# request's duration before it sends the answer — so every answer the driver got is in the
# window. Where COMMAND is the scripts' `drive`, its report is the last line of $RESULTS and
# the daemon's count is checked against the driver's.
with_daemon_view() {
  local conf=$1 admin=$2 out=$3
  shift 3
  metrics "$conf" "$admin" > "$WORK/metrics-view-before"
  "$@"
  metrics "$conf" "$admin" > "$WORK/metrics-view-after"
  daemon_latency "$WORK/metrics-view-before" "$WORK/metrics-view-after" ${RESULTS:+"$RESULTS"} > "$out"
}
