#!/usr/bin/env bash
# Scale, overload and tail latency of ravpnd (issue 5): two daemons on loopback with the same
# features as benches/compare-freeradius.sh (local users, one registered Windows device per
# user with the serial the load driver presents, an address pool, DNS), one holding BIG
# (100,000) users and devices, the other SMALL (1,000). Measures
#   1. VmRSS after the import, restarted (the store without the import's freed memory; with
#      RESTART=0 the daemons keep running after their import, and the column reads 2 s later:
#      the memory of a daemon that imported its users itself), with
#      CONNECTED (10,000) of the big store's users connected (a first connection and a
#      reconnection each, then 5 s at 1,000 req/s over them: during, and 3 s after), after
#      priming every user, after the runs and after overload;
#   2. throughput (closed loop, accepts per second) with BIG distinct users in the load against
#      SMALL, in rounds of big store/BIG users, big store/SMALL users, small store/SMALL users
#      (reversed every other round);
#      then the same with the daemons alone on CPU 1 and the driver on CPU 0 (SPLIT=0 skips it);
#   3. overload: the daemon held to OVERLOAD_QUOTA (25) % of one CPU (a cgroup CPU quota, so
#      that the driver can outrun it), its sustained rate under the quota, then an open loop at
#      OVERLOAD_FACTOR (3) x that for OVERLOAD_DURATION, straight away half of it (recovery),
#      then the closed loop again; the daemon must stay up, RSS bounded, drops counted (the driver's machine-wide
#      kernel UDP receive-buffer drops, the daemon socket's own drop counter from
#      /proc/net/udp, and ravpnd's /metrics);
#   4. latency: one request in flight, and an open loop at half of the peak.
# Loopback only; every process it starts is stopped by PID and the temp dir removed, even on
# error. Bounded: about 5 minutes once built (9-10 with the builds) on a 2-core machine.
#
#   benches/scale.sh                # defaults below; override with env variables:
#   BIG=100000 SMALL=1000 CONNECTED=10000 ROUNDS=3 DURATION=8s WARMUP=2s CONCURRENCY=64 THREADS=2 \
#   OVERLOAD_FACTOR=3 OVERLOAD_QUOTA=25 OVERLOAD_DURATION=20s RECOVERY_DURATION=10s IMPORT_CHUNK=5000 benches/scale.sh
#
# Users are imported with a CHEAP argon2id hash (m=8 KiB, t=1, p=1, made with python's
# argon2-cffi, installed with pip when missing) so that importing and priming 100,000 users
# takes seconds, not an hour; the measured steady state serves from the credential cache
# either way. Raw JSON lines are kept in $RESULTS if set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIG=${BIG:-100000}
SMALL=${SMALL:-1000}
# 0: the daemons are not restarted after their import (see 1. above).
RESTART=${RESTART:-1}
# Users of the big store connected before all are primed (0: skip that step).
CONNECTED=${CONNECTED:-10000}
[ "$CONNECTED" -le "$BIG" ] || CONNECTED=$BIG
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
THREADS=${THREADS:-2}
LATENCY_DURATION=${LATENCY_DURATION:-5s}
OVERLOAD_FACTOR=${OVERLOAD_FACTOR:-3}
OVERLOAD_DURATION=${OVERLOAD_DURATION:-20s}
RECOVERY_DURATION=${RECOVERY_DURATION:-10s}
# Under overload most requests are dropped by the kernel and never answered: a short timeout
# (and so a short identifier quarantine) and many identifiers let the driver keep sending.
OVERLOAD_TIMEOUT=${OVERLOAD_TIMEOUT:-300ms}
OVERLOAD_INFLIGHT=${OVERLOAD_INFLIGHT:-65536}
# Percent of one CPU the daemon is held to during the overload part (0: no quota; see there).
OVERLOAD_QUOTA=${OVERLOAD_QUOTA:-25}
# The admin API takes bodies up to 2 MiB: a device row is ~200 bytes of JSON.
IMPORT_CHUNK=${IMPORT_CHUNK:-5000}
# 100,000 users need more than a /16 (65,534 addresses).
POOL_NETWORK=${POOL_NETWORK:-10.8.0.0/15}
SECRET=${SECRET:-bench-secret-0123456789}
PASSWORD=${PASSWORD:-bench-pass}
WORK_PREFIX=ravpnd-scale
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
split_check

# --- prerequisites ---------------------------------------------------------------------------
need_cheap_hash_tools

build_ravpnd_and_driver

# Free loopback ports (asked of the kernel, not guessed); none is 1812.
read -r BIG_PORT BIG_ADMIN BIG_ACCT SMALL_PORT SMALL_ADMIN SMALL_ACCT < <(free_ports udp tcp udp udp tcp udp)

sock_drops() { # PORT: drops counted on the daemon's UDP socket(s) bound to 127.0.0.1:PORT
  awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp
}

# --- the two daemons --------------------------------------------------------------------------
write_config() { # DIR RADIUS_PORT ADMIN_PORT ACCT_PORT WITH_ACCT
  local acct=""
  [ "$5" = yes ] && acct="acct_addr = \"127.0.0.1:$4\""
  bench_config "$1" "$2" "$3" "$acct" "
[[pools]]
name = \"bench\"
network = \"$POOL_NETWORK\"

[dns]
primary = \"10.0.0.53\"
secondary = \"10.0.0.54\"" > "$1/ravpnd.toml"
}

start_daemon() { # NAME RADIUS_PORT ADMIN_PORT ACCT_PORT: sets ${NAME}_PID, ${NAME}_CONF
  local name=$1 dir=$WORK/$1
  mkdir -p "$dir"
  write_config "$dir" "$2" "$3" "$4" yes
  # Builds without accounting do not know acct_addr.
  "$RAVPND" --config "$dir/ravpnd.toml" check-config >/dev/null 2>&1 || write_config "$dir" "$2" "$3" "$4" no
  "$RAVPND" --config "$dir/ravpnd.toml" check-config >&2
  printf -v "${name}_CONF" %s "$dir/ravpnd.toml"
  serve_daemon "$name" "$2"
}

serve_daemon() { # NAME RADIUS_PORT: starts NAME's daemon on its config, sets ${NAME}_PID
  local dir=$WORK/$1
  "$RAVPND" --config "$dir/ravpnd.toml" serve 2>> "$dir/log" &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${1}_PID" %s "$pid"
  wait_ravpnd "$dir/ravpnd.toml" "$2"
}

# Stops NAME's daemon (TERM, waited for) and starts it again on the same store: the memory a
# store costs a daemon that did not import it (an import's freed memory stays with the process).
restart_daemon() { # NAME RADIUS_PORT
  local pid_var=${1}_PID
  stop_pid "${!pid_var}"
  serve_daemon "$1" "$2"
}

say "two daemons: BIG ($BIG users) and SMALL ($SMALL users); pool $POOL_NETWORK, DNS"
start_daemon BIG "$BIG_PORT" "$BIG_ADMIN" "$BIG_ACCT"
start_daemon SMALL "$SMALL_PORT" "$SMALL_ADMIN" "$SMALL_ACCT"
RSS_BIG_START=$(rss "$BIG_PID")
RSS_SMALL_START=$(rss "$SMALL_PID")


# Users with a cheap argon2id PHC hash each (distinct salts), devices with the driver's serial;
# IMPORT_CHUNK rows per file: the CLI sends a file in one request (the admin API's body limit
# is 2 MiB) and waits 30 s for it.
say "writing the import files (cheap argon2id hashes: m=8 KiB, t=1, p=1)"
python3 - "$WORK" "$BIG" "$SMALL" "$PASSWORD" "$IMPORT_CHUNK" <<'EOF'
import os, sys
from argon2 import PasswordHasher
work, big, small, pw, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ph = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
hashes = [ph.hash(pw) for _ in range(max(big, small))]
for name, n in (("BIG", big), ("SMALL", small)):
    d = f"{work}/{name}/import"
    os.makedirs(d, exist_ok=True)
    for c in range(0, n, chunk):
        k = c // chunk
        with open(f"{d}/users-{k:03d}.csv", "w") as f:
            f.write("name,password_hash\n")
            for i in range(c, min(n, c + chunk)):
                f.write(f'user{i},"{hashes[i]}"\n')
        with open(f"{d}/devices-{k:03d}.csv", "w") as f:
            f.write("name,type,serial,user\n")
            for i in range(c, min(n, c + chunk)):
                f.write(f"dev{i},windows,{i:064X},user{i}\n")
EOF

import_all() { # NAME: users then devices, one file at a time (one sled transaction each)
  local conf dir=$WORK/$1/import started
  conf=$WORK/$1/ravpnd.toml
  started=$(date +%s.%N)
  for f in "$dir"/users-*.csv "$dir"/devices-*.csv; do
    case $f in */users-*) what=users;; *) what=devices;; esac
    "$RAVPND" --config "$conf" import "$what" "$f" >/dev/null || { echo "import of $f failed" >&2; return 1; }
  done
  python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started"
}
say "importing"
IMPORT_BIG_S=$(import_all BIG) || exit 1
echo "BIG: $BIG users and devices imported in ${IMPORT_BIG_S}s" >&2
IMPORT_SMALL_S=$(import_all SMALL) || exit 1
echo "SMALL: $SMALL users and devices imported in ${IMPORT_SMALL_S}s" >&2
RSS_BIG_IMPORTED=$(rss "$BIG_PID")
RSS_SMALL_IMPORTED=$(rss "$SMALL_PID")
if [ "$RESTART" = 1 ]; then
  say "restarting both daemons on their stores"
  restart_daemon BIG "$BIG_PORT"
  restart_daemon SMALL "$SMALL_PORT"
else
  say "RESTART=0: the daemons keep running after their import"
fi
sleep 2
RSS_BIG_RESTARTED=$(rss "$BIG_PID")
RSS_SMALL_RESTARTED=$(rss "$SMALL_PID")

# --- runs -------------------------------------------------------------------------------------
RESULTS=${RESULTS:-$WORK/results.jsonl}
: > "$RESULTS"
drive() { # LABEL PORT PID USERS ARGS...: one run of the driver, its JSON appended to $RESULTS
  local label=$1 port=$2 pid=$3 users=$4
  shift 4
  load --bench --target "127.0.0.1:$port" --secret "$SECRET" --users "$users" \
    --password "$PASSWORD" --server-pid "$pid" --label "$label" --json "$@" >> "$RESULTS"
}
median_rps() { python3 - "$RESULTS" "$1" <<'EOF'
import sys
from results import Results
# Accepts per second; at least 2, so that half of it is still a rate when nothing was accepted
# (the summary then says why).
print(max(2, int(Results(sys.argv[1]).med(sys.argv[2], "throughput_rps"))))
EOF
}

# A site with part of its directory connected (a tenth by default): what that costs on top of
# the store.
RSS_CONNECTED=0
if [ "$CONNECTED" -gt 0 ]; then
  say "connected: $CONNECTED of $BIG users (first connection, reconnection, 5 s at 1,000 req/s)"
  for pass in first again; do
    drive "connect-$pass" "$BIG_PORT" "$BIG_PID" "$CONNECTED" --prime --requests 1 --warmup 0s --concurrency 16
  done
  drive connected "$BIG_PORT" "$BIG_PID" "$CONNECTED" --rate 1000 --duration 5s --warmup 0s
  sleep 3
  RSS_CONNECTED=$(rss "$BIG_PID")
fi

say "priming: one request per user (argon2 once per user, a new lease each)"
started=$(date +%s)
drive prime-big "$BIG_PORT" "$BIG_PID" "$BIG" --prime --requests 1 --warmup 0s --concurrency 64
PRIME_BIG_S=$(( $(date +%s) - started ))
drive prime-small "$SMALL_PORT" "$SMALL_PID" "$SMALL" --prime --requests 1 --warmup 0s --concurrency 64
python3 - "$RESULTS" <<'EOF' || exit 1
import json, sys
bad = [r for r in map(json.loads, open(sys.argv[1])) if r["reject"] or r["invalid"] or r["timeouts"]]
for r in bad:
    print(f"{r['label']}: {r['reject']} rejects (first: {r['first_reject']!r}), {r['invalid']} invalid, "
          f"{r['timeouts']} timeouts: the setup is wrong", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
RSS_BIG_PRIMED=$(rss "$BIG_PID")
RSS_SMALL_PRIMED=$(rss "$SMALL_PID")

RUNS=("big-big:$BIG_PORT:$BIG_PID:$BIG" "big-small:$BIG_PORT:$BIG_PID:$SMALL" "small-small:$SMALL_PORT:$SMALL_PID:$SMALL")
rounds() { # SUFFIX: ROUNDS closed-loop rounds of the three runs, labelled NAME$SUFFIX, in
  # alternating order (lib.sh, in_round_order); DRIVE_CPU passes through to `load`.
  local round order r name port pid users
  for round in $(seq "$ROUNDS"); do
    mapfile -t order < <(in_round_order "$round" "${RUNS[@]}")
    echo "round $round of $ROUNDS${1:+ ($1)}, in this order: ${order[*]%%:*}" >&2
    for r in "${order[@]}"; do
      IFS=: read -r name port pid users <<< "$r"
      drive "$name$1" "$port" "$pid" "$users" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP"
    done
  done
}
say "throughput: $ROUNDS rounds x (big store/$BIG users, big store/$SMALL users, small store/$SMALL users; reversed every other round), closed loop, $CONCURRENCY in flight"
rounds ""
PEAK=$(median_rps big-big)
PEAK_SMALL=$(median_rps small-small)
# The same with each daemon alone on CPU 1 and the driver on CPU 0 (lib.sh): steadier rounds,
# since the driver no longer takes the daemon's CPU.
if [ "$SPLIT" = 1 ]; then
  say "throughput, split: the daemons on CPU 1, the driver on CPU 0; $ROUNDS rounds"
  pin 1 "$BIG_PID" "$SMALL_PID"
  DRIVE_CPU=0 rounds -split
  pin all "$BIG_PID" "$SMALL_PID"
fi

say "latency: one request in flight; open loop at half of the peak ($((PEAK / 2)) and $((PEAK_SMALL / 2)) req/s)"
drive big-c1 "$BIG_PORT" "$BIG_PID" "$BIG" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
drive small-c1 "$SMALL_PORT" "$SMALL_PID" "$SMALL" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
# A polling driver: the round trip without the driver's own wake-up (see compare-freeradius.sh).
drive big-c1-poll "$BIG_PORT" "$BIG_PID" "$BIG" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s --spin
drive small-c1-poll "$SMALL_PORT" "$SMALL_PID" "$SMALL" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s --spin
with_daemon_view "$BIG_CONF" "$BIG_ADMIN" "$WORK/daemon-big-half" \
  drive big-half "$BIG_PORT" "$BIG_PID" "$BIG" --rate $((PEAK / 2)) --duration "$LATENCY_DURATION" --warmup 1s
with_daemon_view "$SMALL_CONF" "$SMALL_ADMIN" "$WORK/daemon-small-half" \
  drive small-half "$SMALL_PORT" "$SMALL_PID" "$SMALL" --rate $((PEAK_SMALL / 2)) --duration "$LATENCY_DURATION" --warmup 1s
RSS_BIG_RUNS=$(rss "$BIG_PID")
RSS_SMALL_RUNS=$(rss "$SMALL_PID")

# The driver cannot send 3x what the daemon answers while the two share the CPUs: the daemon's
# CPU per request is about the driver's own. So for this part the daemon is held to
# OVERLOAD_QUOTA percent of one CPU (a cgroup CPU quota, where the machine allows it), its
# sustained rate under that quota is measured (closed loop), and the overload is
# OVERLOAD_FACTOR times that. Without a quota it is the peak above, and the summary says how
# much the driver could actually send.
SUSTAINED=$PEAK
QUOTA=none
if [ "$OVERLOAD_QUOTA" != 0 ] && cpu_quota "$OVERLOAD_QUOTA" "$BIG_PID"; then
  QUOTA="$OVERLOAD_QUOTA % of a CPU"
  drive sustained "$BIG_PORT" "$BIG_PID" "$BIG" --concurrency "$CONCURRENCY" --duration "$LATENCY_DURATION" --warmup 1s
  SUSTAINED=$(median_rps sustained)
fi
say "overload (big store, $BIG users; CPU quota: $QUOTA): open loop at ${OVERLOAD_FACTOR}x the sustained rate ($SUSTAINED) = $((SUSTAINED * OVERLOAD_FACTOR)) req/s for $OVERLOAD_DURATION, then $((SUSTAINED / 2)) req/s, then the closed loop"
metrics "$BIG_CONF" "$BIG_ADMIN" > "$WORK/metrics-before"
DROPS_BEFORE=$(sock_drops "$BIG_PORT")
# VmRSS sampled every 0.2 s during overload and recovery: the maximum is reported.
( while kill -0 "$BIG_PID" 2>/dev/null; do rss "$BIG_PID"; sleep 0.2; done ) > "$WORK/rss-samples" &
SAMPLER=$!
PIDS+=("$SAMPLER")
drive overload "$BIG_PORT" "$BIG_PID" "$BIG" --rate $((SUSTAINED * OVERLOAD_FACTOR)) --duration "$OVERLOAD_DURATION" \
  --warmup 0s --timeout "$OVERLOAD_TIMEOUT" --concurrency "$OVERLOAD_INFLIGHT"
DROPS_OVERLOAD=$(sock_drops "$BIG_PORT")
RSS_BIG_OVERLOAD=$(rss "$BIG_PID")
drive recovery-half "$BIG_PORT" "$BIG_PID" "$BIG" --rate $((SUSTAINED / 2)) --duration "$RECOVERY_DURATION" --warmup 0s
DROPS_RECOVERY=$(sock_drops "$BIG_PORT")
drive recovery-closed "$BIG_PORT" "$BIG_PID" "$BIG" --concurrency "$CONCURRENCY" --duration "$LATENCY_DURATION" --warmup 0s
[ "$QUOTA" = none ] || cpu_quota off "$BIG_PID"
kill "$SAMPLER" 2>/dev/null || true
metrics "$BIG_CONF" "$BIG_ADMIN" > "$WORK/metrics-after"
if kill -0 "$BIG_PID" 2>/dev/null; then BIG_ALIVE=yes; else BIG_ALIVE=no; fi
RSS_BIG_END=$(rss "$BIG_PID")
RSS_SMALL_END=$(rss "$SMALL_PID")

# --- summary ----------------------------------------------------------------------------------
say "summary"
python3 - "$RESULTS" "$WORK" "$BIG" "$SMALL" "$CONCURRENCY" "$THREADS" "$(nproc)" "$POOL_NETWORK" \
  "$RSS_BIG_START $RSS_BIG_IMPORTED $RSS_BIG_RESTARTED $RSS_BIG_PRIMED $RSS_BIG_RUNS $RSS_BIG_OVERLOAD $RSS_BIG_END" \
  "$RSS_SMALL_START $RSS_SMALL_IMPORTED $RSS_SMALL_RESTARTED $RSS_SMALL_PRIMED $RSS_SMALL_RUNS $RSS_SMALL_END" \
  "$IMPORT_BIG_S $IMPORT_SMALL_S $PRIME_BIG_S" "$DROPS_BEFORE $DROPS_OVERLOAD $DROPS_RECOVERY" \
  "$BIG_ALIVE" "$OVERLOAD_FACTOR" "$(cut -d' ' -f1-3 /proc/loadavg)" "$CONNECTED" "$RSS_CONNECTED" "$QUOTA" \
  "$RESTART" <<'EOF'
import re, sys
from results import Results, ratio_text
(path, work, big, small, conc, threads, cpus, pool, rss_big, rss_small, times, drops,
 alive, factor, loadavg, connected, rss_connected, quota, restart) = sys.argv[1:]
res = Results(path)
rs, by, med, lat = res.runs, res.by, res.med, res.lat
mib = lambda kb: int(kb) / 1024
print(f"machine: {cpus} CPUs, load driver {threads} thread(s); ravpnd features: users, devices (serial check), "
      f"address pool {pool}, DNS; big store {big} users+devices, small store {small}")
ib, is_, pb = times.split()
print(f"import: {big} users+devices in {ib} s, {small} in {is_} s; priming {big} users {pb} s")

print(f"\n1. VmRSS (MiB)            start  imported  {'restarted' if restart == '1' else 'not rest.'}  primed  after runs  after overload  end")
rb = [mib(x) for x in rss_big.split()]
rsm = [mib(x) for x in rss_small.split()]
samples = [int(x) for x in open(f"{work}/rss-samples").read().split() if x.isdigit()]
print(f"   big ({big:>6})        {rb[0]:6.1f}  {rb[1]:8.1f}  {rb[2]:9.1f}  {rb[3]:6.1f}  {rb[4]:10.1f}  {rb[5]:14.1f}  {rb[6]:5.1f}"
      f"   (max during overload+recovery {max(samples) / 1024 if samples else float('nan'):.1f})")
print(f"   small ({small:>6})      {rsm[0]:6.1f}  {rsm[1]:8.1f}  {rsm[2]:9.1f}  {rsm[3]:6.1f}  {rsm[4]:10.1f}  {'':>14}  {rsm[5]:5.1f}")
print(f"   ratio big/small {'restarted' if restart == '1' else 'after import'} {rb[2] / rsm[2]:.2f}, after priming {rb[3] / rsm[3]:.2f}, after runs {rb[4] / rsm[4]:.2f};"
      " target: big under 64 MiB")
if by.get("connected"):
    print(f"   big store, {connected} of its users connected (1,000 req/s over them): during {med('connected', 'server_rss_kb') / 1024:.1f},"
          f" 3 s after {mib(rss_connected):.1f}")

names = {"big-big": f"big store, {big} users in the load", "big-small": f"big store, {small} users in the load",
         "small-small": f"small store, {small} users in the load"}
def throughput(suffix, number, title):
    """Section `number` for the runs whose labels end in `suffix`; returns the big-big median."""
    print(f"\n{number}. throughput, {title}closed loop, {conc} in flight, median of {len(by.get('big-big' + suffix, []))} rounds:")
    for label, text in names.items():
        label += suffix
        runs = " ".join(f"{r['throughput_rps']:.0f}" for r in by.get(label, []))
        print(f"   {text:<38} {med(label, 'throughput_rps'):>8.0f} req/s (runs: {runs})  p50 {lat(label, 'p50'):.0f} µs"
              f"  p99 {lat(label, 'p99'):.0f} µs  server CPU {med(label, 'server_cpu_us_per_req'):.1f} µs/req"
              f"  others {med(label, 'other_busy_cores'):.2f} cores")
    # Accepts per second; a ratio with rejects on either side is refused (results.py).
    ratio = lambda a, b, key="throughput_rps": res.ratio(a + suffix, b + suffix, key)
    print(f"   ratio {big} users / {small} users (same big store) {ratio('big-big', 'big-small')};"
          f" big store {big} users / small store {small} users {ratio('big-big', 'small-small')}")
    print(f"   server CPU per request, same ratios: {ratio('big-big', 'big-small', 'server_cpu_us_per_req')}, "
          f"{ratio('big-big', 'small-small', 'server_cpu_us_per_req')}")
    # Each round's runs in the order they ran (reversed every other round), and its ratios.
    for i, rnd in enumerate(res.rounds([l + suffix for l in names]), 1):
        r = {x["label"][:len(x["label"]) - len(suffix)]: [x] for x in rnd}
        order = " → ".join(f"{x['label']} {x['throughput_rps']:.0f}" for x in rnd)
        print(f"   round {i}: {order}; big-big/big-small {ratio_text(r.get('big-big', []), r.get('big-small', []))},"
              f" big-big/small-small {ratio_text(r.get('big-big', []), r.get('small-small', []))}")
    # A driver that used its whole CPU sets the rate: then only the CPU per request compares.
    if suffix and any(med(l + suffix, "driver_cores") >= 0.95 for l in names):
        print("   the driver's CPU was full (≥ 0.95 cores): the rates are the driver's; compare the CPU per request")
    return med("big-big" + suffix, "throughput_rps")
peak_big = throughput("", "2", "")
if by.get("big-big-split"):
    throughput("-split", "2b", "each daemon alone on CPU 1, the driver (1 thread) on CPU 0, ")

def metric(name):
    out = {}
    for line in open(f"{work}/{name}"):
        m = re.match(r'(ravpnd_(?:dropped_total|requests_total)\{[^}]*\})\s+(\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
before, after = metric("metrics-before"), metric("metrics-after")
delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
d0, d1, d2 = (int(x) for x in drops.split())
o = by.get("overload", [{}])[0]
# The rate the overload is a multiple of: closed loop under the CPU quota, else the peak.
base, base_text = (med("sustained", "throughput_rps"), f"the sustained rate under a CPU quota of {quota}") \
    if by.get("sustained") else (peak_big, "the peak (no CPU quota)")
print(f"\n3. overload (big store, {big} users): daemon alive afterwards: {alive}")
print(f"   base: {base_text}: {base:.0f} req/s (closed loop, {conc} in flight)")
def line(label, text):
    r = by.get(label, [{}])[0]
    w = r.get("window_s") or float("nan")
    # `requests` counts every scheduled send; `skipped` ones found no free identifier.
    sent = r.get("requests", 0) - r.get("skipped", 0)
    print(f"   {text:<34} offered {r.get('requests', 0) / w:>7.0f} req/s, sent {sent / w:>7.0f} req/s ({sent / w / base:.1f}x the base),"
          f" accepted {r.get('throughput_rps', 0):>7.0f} req/s, rejects {r.get('reject', 0)}, timeouts {r.get('timeouts', 0)}, stray {r.get('stray', 0)},"
          f" invalid {r.get('invalid', 0)}; p50 {r['latency_us']['p50']:.0f} µs p99 {r['latency_us']['p99']:.0f} µs"
          f" p99.9 {r['latency_us']['p999']:.0f} µs; kernel UDP rcvbuf drops (machine) {r.get('udp_rcvbuf_drops')};"
          f" server CPU {r.get('server_cores') or float('nan'):.2f} cores, others {r.get('other_busy_cores') or float('nan'):.2f} cores")
line("overload", f"{factor}x the base")
line("recovery-half", "then half of the base")
line("recovery-closed", f"then closed loop, {conc} in flight")
print(f"   the daemon socket's drop counter (/proc/net/udp): +{d1 - d0} during overload, +{d2 - d1} during the half-rate recovery")
print(f"   /metrics deltas: " + (", ".join(f"{k} +{v:.0f}" for k, v in sorted(delta.items())) or "none"))
print(f"   recovery: closed loop after overload / before = {med('recovery-closed', 'throughput_rps') / base:.2f}")

print("\n4. latency (µs; to the answer's arrival at the driver's socket, the kernel's stamp; read: to the driver's read)")
print("                                         p50     p99   p99.9   read p50  p99   req/s")
for label, text in (("big-c1", f"one in flight, big ({big} users)"), ("small-c1", f"one in flight, small ({small})"),
                    ("big-c1-poll", "the same, polling driver, big"), ("small-c1-poll", "the same, polling driver, small"),
                    ("big-half", f"half of peak, big ({big} users)"), ("small-half", f"half of peak, small ({small})")):
    print(f"   {text:<34} {lat(label, 'p50'):7.0f} {lat(label, 'p99'):7.0f} {lat(label, 'p999'):7.0f}"
          f" {lat(label, 'p50', 'read'):7.0f} {lat(label, 'p99', 'read'):7.0f} {med(label, 'throughput_rps'):8.0f}"
          f"   others {med(label, 'other_busy_cores'):.2f} cores, skipped {by.get(label, [{}])[0].get('skipped', 0)}")
for size in ("big", "small"):
    print(f"   the {size} daemon's own histograms over {size}-half (warm-up included): "
          + open(f"{work}/daemon-{size}-half").read().strip())
print(f"   target: p99 under 1 ms at half of the peak")
print(f"\nload average at the end: {loadavg}")
bad = [r for r in rs if r["label"] not in ("overload", "recovery-half", "recovery-closed", "sustained")
       and (r["invalid"] or r["timeouts"] or r.get("skipped") or r.get("stray") or r.get("send_errors")
            or (r["reject"] and not r["label"].startswith("prime")))]
if bad:
    print(f"WARNING: {len(bad)} run(s) had invalid answers, timeouts, skipped or unmatched sends, or rejects:")
    for r in bad:
        print(f"  {r['label']}: reject {r['reject']} invalid {r['invalid']} timeouts {r['timeouts']} skipped {r.get('skipped', 0)} stray {r.get('stray', 0)} send errors {r.get('send_errors', 0)} first reject {r['first_reject']!r}")
rej = [r for r in rs if r["label"].startswith("prime") and r["reject"]]
for r in rej:
    print(f"WARNING: {r['label']}: {r['reject']} rejects, first {r['first_reject']!r}")
EOF
