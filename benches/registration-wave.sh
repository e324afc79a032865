#!/usr/bin/env bash
# Renewals during a wave of first connections (issue 5): does a registration (a durable write
# to the device and serial index) slow down everyone else? One daemon on loopback with the
# features of benches/compare-freeradius.sh (local users, a registered Windows device each,
# an address pool, DNS) holding STEADY users whose devices are registered and, for the wave,
# users whose assigned device has no serial yet. In each round:
#   - the closed loop over the STEADY users alone (the steady rate);
#   - the same closed loop while a second driver sends first connections of new users at
#     WAVE_RATE per second (each one a registration: "device registered" reject);
# in that order in odd rounds and the other way round in even ones (so that a drift of the
# machine does not fall on one side), and prints both rates (accepts per second) and their
# ratio (1.00: registrations cost the others nothing beyond the CPU they use themselves).
# A ratio is refused when a steady-user run had rejects.
# Loopback only; every process it starts is stopped by PID and the temp dir removed, even on
# error. About 1 minute once built.
#
#   benches/registration-wave.sh      # defaults below; override with env variables:
#   STEADY=1000 WAVE_RATE=200 ROUNDS=3 DURATION=6s CONCURRENCY=64 THREADS=2 benches/registration-wave.sh
#
# Users are imported with a cheap argon2id hash (m=8 KiB, t=1, p=1; python's argon2-cffi,
# installed with pip when missing), as in benches/scale.sh: with the default cost each first
# connection would spend tens of milliseconds in argon2 and the wave would measure argon2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STEADY=${STEADY:-1000}
WAVE_RATE=${WAVE_RATE:-200}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
CONCURRENCY=${CONCURRENCY:-64}
THREADS=${THREADS:-2}
SECRET=${SECRET:-bench-secret-0123456789}
PASSWORD=${PASSWORD:-bench-pass}
WORK_PREFIX=ravpnd-wave
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

need_cheap_hash_tools

build_ravpnd_and_driver
read -r PORT ADMIN < <(free_ports udp tcp)

# The wave must not run out of new users: each round's wave lasts the measurement plus a
# second of warm-up, with a margin.
SECONDS_PER_WAVE=$(python3 -c "import sys; print(int(float(sys.argv[1].rstrip('s'))) + 3)" "$DURATION")
PER_ROUND=$((WAVE_RATE * SECONDS_PER_WAVE))
WAVE=$((PER_ROUND * ROUNDS))

say "importing $STEADY users with registered devices and $WAVE with unregistered ones"
python3 - "$WORK" "$STEADY" "$WAVE" "$PASSWORD" <<'EOF'
import sys
from argon2 import PasswordHasher
work, steady, wave, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
h = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(pw)
with open(f"{work}/users.csv", "w") as f:
    f.write("name,password_hash\n")
    for i in range(steady + wave):
        f.write(f'user{i},"{h}"\n')
with open(f"{work}/devices.csv", "w") as f:
    f.write("name,type,serial,user\n")
    for i in range(steady + wave):
        # The load driver's user i presents serial format!("{i:064X}").
        f.write(f"dev{i},windows,{f'{i:064X}' if i < steady else ''},user{i}\n")
EOF
bench_config "$WORK" "$PORT" "$ADMIN" "" "
[[pools]]
name = \"bench\"
network = \"10.8.0.0/15\"

[dns]
primary = \"10.0.0.53\"
secondary = \"10.0.0.54\"" > "$WORK/ravpnd.toml"
"$RAVPND" --config "$WORK/ravpnd.toml" serve 2> "$WORK/log" &
PID=$!
PIDS+=("$PID")
wait_ravpnd "$WORK/ravpnd.toml" "$PORT"
"$RAVPND" --config "$WORK/ravpnd.toml" import users "$WORK/users.csv" >/dev/null
"$RAVPND" --config "$WORK/ravpnd.toml" import devices "$WORK/devices.csv" >/dev/null

drive() { # ARGS...: one run of the driver against the daemon, JSON on stdout
  "$LOAD" --bench --target "127.0.0.1:$PORT" --secret "$SECRET" --password "$PASSWORD" --json "$@"
}
registrations() {
  metrics "$WORK/ravpnd.toml" "$ADMIN" |
    awk '/^ravpnd_requests_total.*reason="device_registered"/ { n += $NF } END { print n + 0 }'
}

say "priming the $STEADY steady users (argon2 once each, a lease each)"
drive --users "$STEADY" --prime --requests 1 --warmup 0s --concurrency 64 >/dev/null

RESULTS=$WORK/results.jsonl
steady() {
  drive --users "$STEADY" --threads "$THREADS" --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --warmup 1s --server-pid "$PID" --label steady >> "$RESULTS"
}
during_wave() { # ROUND: the steady users' closed loop during that round's wave (its own users)
  local before wave_pid
  before=$(registrations)
  drive --first-user $((STEADY + ($1 - 1) * PER_ROUND)) --users "$PER_ROUND" --rate "$WAVE_RATE" \
    --threads 1 --duration "$DURATION" --warmup 1s --label wave-driver >> "$RESULTS" &
  wave_pid=$!
  PIDS+=("$wave_pid")
  sleep 1
  drive --users "$STEADY" --threads "$THREADS" --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --warmup 0s --server-pid "$PID" --label during-wave >> "$RESULTS"
  wait "$wave_pid"
  echo "{\"label\": \"registrations\", \"count\": $(( $(registrations) - before ))}" >> "$RESULTS"
}
for round in $(seq "$ROUNDS"); do
  mapfile -t order < <(in_round_order "$round" steady during_wave)
  say "round $round: ${order[0]//_/ } then ${order[1]//_/ } (a wave of $WAVE_RATE first connections/s)"
  for phase in "${order[@]}"; do
    case $phase in
      steady) steady ;;
      during_wave) during_wave "$round" ;;
    esac
  done
done

python3 - "$RESULTS" "$WAVE_RATE" <<'EOF'
import json, statistics, sys
from results import Results, ratio_text, rejected
res = Results(sys.argv[1])
rs = res.runs
steady = [r for r in rs if r["label"] == "steady"]
wave = [r for r in rs if r["label"] == "during-wave"]
regs = [r["count"] for r in rs if r["label"] == "registrations"]
bad = [r for r in steady + wave if r["reject"] or r["invalid"] or r["timeouts"]]
for r in bad:
    print(f"{r['label']}: {r['reject']} rejects ({r['first_reject']!r}), {r['invalid']} invalid, "
          f"{r['timeouts']} timeouts", file=sys.stderr)
print(f"\nregistration wave at {sys.argv[2]}/s (registrations per round: {regs})")
# req/s: accepts per second (rejects, cheaper than accepts, are no throughput); a ratio with a
# steady-user run that had rejects is refused. The rounds alternate their order.
ratios = []
for i, rnd in enumerate(res.rounds(("steady", "during-wave")), 1):
    r = {x["label"]: x for x in rnd}
    s, w = r.get("steady"), r.get("during-wave")
    if not (s and w):
        continue
    if s["throughput_rps"]:
        ratios.append(w["throughput_rps"] / s["throughput_rps"])
    print(f"  round {i} ({' then '.join(x['label'] for x in rnd)}): steady {s['throughput_rps']:,.0f} req/s, "
          f"during the wave {w['throughput_rps']:,.0f} req/s (p99 {s['latency_us']['p99']:,.0f} -> "
          f"{w['latency_us']['p99']:,.0f} us): {ratio_text([w], [s])}")
why = rejected(steady + wave)
if why:
    print(f"  median ratio: INVALID, no ratio ({why})")
else:
    print(f"  median ratio {statistics.median(ratios):.2f}" if ratios else "  median ratio: n/a")
sys.exit(1 if bad else 0)
EOF
