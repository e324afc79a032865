#!/usr/bin/env bash
# Compares ravpnd with FreeRADIUS 3.2 on this machine, as DESIGN.md's performance yardstick
# asks: same 1,000 users, same load driver (benches/load), same concurrency, in alternation,
# plus the null responder (the harness's ceiling). Loopback only; every process it starts is
# stopped by PID and every temp dir removed, even on error. Bounded: a few minutes.
#
#   benches/compare-freeradius.sh            # defaults below; override with env variables:
#   ROUNDS=3 DURATION=8s WARMUP=2s CONCURRENCY=64 USERS=1000 THREADS=2 benches/compare-freeradius.sh
#   SPLIT=0 benches/compare-freeradius.sh      # skip the throughput rounds with the servers on
#       CPU 1 and the driver on CPU 0 (run by default after the rounds sharing both CPUs)
#   WORKLOAD=ad benches/compare-freeradius.sh   # Active Directory: a Samba AD DC on loopback,
#       FreeRADIUS with rlm_ldap against ravpnd's AD source (root; benches/compare-freeradius-ad.sh;
#       USERS defaults to 200 there, PASSWORD to one AD's complexity rules accept)
#
# Output: each run's report, then a summary with the ratios ravpnd/FreeRADIUS and
# ravpnd/null-responder (of accepts per second; refused when a measured run had rejects); the
# raw JSON lines, in the order run, are kept in $RESULTS if set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORKLOAD=${WORKLOAD:-local}
case $WORKLOAD in
  local) ;;
  # Creating an AD user with a password costs ~60 ms (Samba derives its Kerberos keys).
  ad) USERS=${USERS:-200}; PASSWORD=${PASSWORD:-Bench-Passw0rd-1} ;;
  *) echo "WORKLOAD must be local or ad, not $WORKLOAD" >&2; exit 2 ;;
esac
USERS=${USERS:-1000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
THREADS=${THREADS:-2}
LATENCY_DURATION=${LATENCY_DURATION:-5s}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-3}
[[ $LATENCY_ROUNDS =~ ^[0-9]+$ ]] || { echo "LATENCY_ROUNDS must be a whole number, not $LATENCY_ROUNDS" >&2; exit 2; }
SECRET=${SECRET:-bench-secret-0123456789}
PASSWORD=${PASSWORD:-bench-pass}
WORK_PREFIX=ravpnd-compare
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
split_check

# --- prerequisites ---------------------------------------------------------------------------
if ! command -v freeradius >/dev/null 2>&1; then
  say "installing FreeRADIUS (Debian freeradius, freeradius-utils)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq freeradius freeradius-utils >&2 \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq freeradius freeradius-utils >&2; }
fi
command -v python3 >/dev/null || { echo "python3 is needed for the summary" >&2; exit 1; }
FR_VERSION=$(freeradius -v 2>/dev/null | sed -n 's/.*FreeRADIUS Version \([0-9.]*\).*/\1/p' | head -1)

build_ravpnd_and_driver

# Free loopback ports (asked of the kernel, not guessed); none is 1812.
read -r RAVPND_PORT ADMIN_PORT FR_PORT NULL_PORT ACCT_PORT < <(free_ports udp tcp udp udp udp)

if [ "$WORKLOAD" = ad ]; then
  # shellcheck source=benches/compare-freeradius-ad.sh
  . "$ROOT/benches/compare-freeradius-ad.sh"
  exit 0
fi

# --- ravpnd -----------------------------------------------------------------------------------
say "ravpnd: config, $USERS users with one registered Windows device each"
mkdir -p "$WORK/ravpnd"
RCONF=$WORK/ravpnd/ravpnd.toml
write_ravpnd_config() { # EXTRA_TOML
  bench_config "$WORK/ravpnd" "$RAVPND_PORT" "$ADMIN_PORT" "$RADIUS_EXTRA" "$1" > "$RCONF"
}
# Address pools and DNS are on their way in ravpnd: use them when this build accepts them.
POOL_TOML='
[[pools]]
name = "bench"
network = "10.8.0.0/16"
'
DNS_TOML='
[dns]
primary = "10.0.0.53"
secondary = "10.0.0.54"
'
FEATURES="users, devices (serial check)"
EXTRA=""
# Builds with accounting listen on acct_addr too: keep it on loopback.
RADIUS_EXTRA="acct_addr = \"127.0.0.1:$ACCT_PORT\""
write_ravpnd_config ""
"$RAVPND" --config "$RCONF" check-config >/dev/null 2>&1 || RADIUS_EXTRA=""
for candidate in "$POOL_TOML" "$DNS_TOML"; do
  write_ravpnd_config "$EXTRA$candidate"
  if "$RAVPND" --config "$RCONF" check-config >/dev/null 2>&1; then
    EXTRA="$EXTRA$candidate"
    case $candidate in *pools*) FEATURES="$FEATURES, address pool";; *dns*) FEATURES="$FEATURES, DNS";; esac
  fi
done
write_ravpnd_config "$EXTRA"
"$RAVPND" --config "$RCONF" check-config >&2

"$RAVPND" --config "$RCONF" serve 2> "$WORK/ravpnd/log" &
RAVPND_PID=$!
PIDS+=("$RAVPND_PID")
wait_ravpnd "$RCONF" "$RAVPND_PORT"
RSS_START=$(rss "$RAVPND_PID")

# The CLI's import request has a 30 s timeout and argon2 hashes serially per request:
# 200 users per file, two files at a time (two cores).
python3 - "$WORK/ravpnd" "$USERS" "$PASSWORD" <<'EOF'
import sys
d, n, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chunk = 200
for c in range(0, n, chunk):
    with open(f"{d}/users-{c // chunk:03d}.csv", "w") as f:
        f.write("name,password\n")
        for i in range(c, min(n, c + chunk)):
            f.write(f"user{i},{pw}\n")
with open(f"{d}/devices.csv", "w") as f:
    f.write("name,type,serial,user\n")
    for i in range(n):
        f.write(f"dev{i},windows,{i:064X},user{i}\n")
EOF
started=$(date +%s)
set -- "$WORK"/ravpnd/users-*.csv
while [ $# -gt 0 ]; do
  "$RAVPND" --config "$RCONF" import users "$1" >/dev/null &
  a=$!
  if [ $# -gt 1 ]; then
    "$RAVPND" --config "$RCONF" import users "$2" >/dev/null &
    b=$!
    wait "$b"
    shift
  fi
  wait "$a"
  shift
done
"$RAVPND" --config "$RCONF" import devices "$WORK/ravpnd/devices.csv" >/dev/null
RSS_IMPORTED=$(rss "$RAVPND_PID")
echo "imported $USERS users and devices in $(( $(date +%s) - started ))s" >&2

# --- FreeRADIUS -------------------------------------------------------------------------------
say "FreeRADIUS $FR_VERSION: private config, $USERS users (files module, PAP)"
FR=$WORK/freeradius
mkdir -p "$FR/log" "$FR/run"
cp -r /etc/freeradius/3.0 "$FR/raddb"
sed -i -e "s|^logdir = .*|logdir = $FR/log|" -e "s|^run_dir = .*|run_dir = $FR/run|" \
  -e 's|^\(\s*\)user = freerad|\1#user = freerad|' -e 's|^\(\s*\)group = freerad|\1#group = freerad|' \
  "$FR/raddb/radiusd.conf"
# Only the modules this site uses; only this site.
find "$FR/raddb/mods-enabled" -mindepth 1 \( -name pap -o -name files -o -name always -o -name expr \) -prune -o -exec rm -f {} +
rm -f "$FR/raddb/sites-enabled/"*
cat > "$FR/raddb/sites-enabled/bench" <<EOF
server bench {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = $FR_PORT
	}
	authorize {
		files
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
	}
	# FreeRADIUS 3.2.1 signs a reply only when it carries a Message-Authenticator: add one,
	# as ravpnd always does (BlastRADIUS hardening).
	post-auth {
		update reply {
			&Message-Authenticator := 0x00
		}
		Post-Auth-Type REJECT {
			update reply {
				&Message-Authenticator := 0x00
			}
		}
	}
}
EOF
cat > "$FR/raddb/clients.conf" <<EOF
client bench {
	ipaddr = 127.0.0.1
	secret = $SECRET
	require_message_authenticator = yes
}
EOF
python3 - "$FR/raddb/mods-config/files/authorize" "$USERS" "$PASSWORD" <<'EOF'
import sys
path, n, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    for i in range(n):
        a = i + 1
        f.write(f'user{i}\tCleartext-Password := "{pw}"\n'
                f'\tFramed-IP-Address = 10.8.{a // 256}.{a % 256},\n'
                f'\tASA-Primary-DNS = 10.0.0.53,\n'
                f'\tASA-Secondary-DNS = 10.0.0.54,\n'
                f'\tReply-Message = "accepted"\n\n')
EOF
freeradius -C -d "$FR/raddb" -l stdout >/dev/null
freeradius -f -d "$FR/raddb" -l "$FR/log/radius.log" > "$FR/log/stdout" 2>&1 &
FR_PID=$!
PIDS+=("$FR_PID")
wait_udp "$FR_PORT"

# --- null responder ---------------------------------------------------------------------------
"$LOAD" --bench null-responder --listen "127.0.0.1:$NULL_PORT" --secret "$SECRET" --threads 2 \
  --duration 30m 2> "$WORK/null.log" &
NULL_PID=$!
PIDS+=("$NULL_PID")
wait_udp "$NULL_PORT"

# --- runs -------------------------------------------------------------------------------------
RESULTS=${RESULTS:-$WORK/results.jsonl}
: > "$RESULTS"
drive() { # LABEL PORT PID ARGS...: one run of the driver, its JSON appended to $RESULTS
  local label=$1 port=$2 pid=$3
  shift 3
  load --bench --target "127.0.0.1:$port" --secret "$SECRET" --users "$USERS" \
    --password "$PASSWORD" --server-pid "$pid" --label "$label" --json "$@" >> "$RESULTS"
}

say "priming: one request per user (fills ravpnd's credential cache; argon2 once per user)"
drive prime-ravpnd "$RAVPND_PORT" "$RAVPND_PID" --prime --requests 1 --warmup 0s --concurrency 16
drive prime-freeradius "$FR_PORT" "$FR_PID" --prime --requests 1 --warmup 0s --concurrency 16
RSS_PRIMED=$(rss "$RAVPND_PID")

SERVERS=("ravpnd:$RAVPND_PORT:$RAVPND_PID" "freeradius:$FR_PORT:$FR_PID" "null:$NULL_PORT:$NULL_PID")
rounds() { # SUFFIX: ROUNDS closed-loop rounds of the three servers, labelled NAME$SUFFIX, in
  # alternating order (lib.sh, in_round_order); DRIVE_CPU passes through to `load`.
  local round order s name port pid
  for round in $(seq "$ROUNDS"); do
    mapfile -t order < <(in_round_order "$round" "${SERVERS[@]}")
    echo "round $round of $ROUNDS${1:+ ($1)}, in this order: ${order[*]%%:*}" >&2
    for s in "${order[@]}"; do
      IFS=: read -r name port pid <<< "$s"
      drive "$name$1" "$port" "$pid" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP"
    done
  done
}
say "throughput: $ROUNDS rounds x (ravpnd, FreeRADIUS, null responder; reversed every other round), closed loop, $CONCURRENCY in flight"
rounds ""

# The same with the load driver kept off the servers' CPU (lib.sh, `load`): above, the driver
# and the server share both CPUs, so each request's driver work (~5 µs, as much as ravpnd's)
# competes with the server and its wake-ups preempt it: that measures server plus driver.
# Split, each server gets one whole CPU, as a RADIUS server does with its NAS on another
# machine; FreeRADIUS gives up its second CPU, and so does ravpnd.
if [ "$SPLIT" = 1 ]; then
  say "throughput, split: servers on CPU 1, the driver on CPU 0; $ROUNDS rounds, $CONCURRENCY in flight"
  pin 1 "$RAVPND_PID" "$FR_PID" "$NULL_PID"
  DRIVE_CPU=0 rounds -split
  pin all "$RAVPND_PID" "$FR_PID" "$NULL_PID"
fi

say "latency: one request in flight"
drive "ravpnd-c1" "$RAVPND_PORT" "$RAVPND_PID" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
drive "freeradius-c1" "$FR_PORT" "$FR_PID" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
drive "null-c1" "$NULL_PORT" "$NULL_PID" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
# The same with a polling driver: without the driver's own wake-up for each answer (50-100 µs
# on an idle vCPU of this host), what is left is the server's part of the round trip.
for s in "${SERVERS[@]}"; do
  IFS=: read -r name port pid <<< "$s"
  drive "$name-c1-poll" "$port" "$pid" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s --spin
done

say "latency in the open loop: ravpnd and the null responder at half and a quarter of ravpnd's peak, $LATENCY_ROUNDS rounds; FreeRADIUS and the null responder at half of theirs"
share() { python3 - "$RESULTS" "$1" "$2" <<'EOF'
import sys
from results import Results
# Accepts per second over DIVISOR: a server that rejected everything still gets a (minimal)
# open loop, and the summary says why its figures do not count.
print(max(1, int(Results(sys.argv[1]).med(sys.argv[2], "throughput_rps") / int(sys.argv[3]))))
EOF
}
RAVPND_HALF=$(share ravpnd 2)
RAVPND_QUARTER=$(share ravpnd 4)
FR_HALF=$(share freeradius 2)
NULL_HALF=$(share null 2)
# ravpnd and the null responder at the same offered rates (half and a quarter of ravpnd's
# peak), LATENCY_ROUNDS rounds in alternating order: a tail at load on two shared CPUs moves
# by more than 2x from one minute to the next, so one run of each says little; the same rate
# on the null responder, next to it in time, shows the harness's own tail then.
for round in $(seq "$LATENCY_ROUNDS"); do
  mapfile -t order < <(in_round_order "$round" ravpnd null)
  echo "latency round $round of $LATENCY_ROUNDS, in this order: ${order[*]}" >&2
  for s in "${order[@]}"; do
    case $s in
      ravpnd)
        with_daemon_view "$RCONF" "$ADMIN_PORT" "$WORK/daemon-half-$round" \
          drive "ravpnd-half" "$RAVPND_PORT" "$RAVPND_PID" --rate "$RAVPND_HALF" --duration "$LATENCY_DURATION" --warmup 1s
        drive "ravpnd-quarter" "$RAVPND_PORT" "$RAVPND_PID" --rate "$RAVPND_QUARTER" --duration "$LATENCY_DURATION" --warmup 1s ;;
      null)
        drive "null-at-ravpnd-half" "$NULL_PORT" "$NULL_PID" --rate "$RAVPND_HALF" --duration "$LATENCY_DURATION" --warmup 1s
        drive "null-at-ravpnd-quarter" "$NULL_PORT" "$NULL_PID" --rate "$RAVPND_QUARTER" --duration "$LATENCY_DURATION" --warmup 1s ;;
    esac
  done
done
DAEMON_HALF=$(for round in $(seq "$LATENCY_ROUNDS"); do echo "round $round: $(cat "$WORK/daemon-half-$round")"; done)
drive "freeradius-half" "$FR_PORT" "$FR_PID" --rate "$FR_HALF" --duration "$LATENCY_DURATION" --warmup 1s
drive "null-half" "$NULL_PORT" "$NULL_PID" --rate "$NULL_HALF" --duration "$LATENCY_DURATION" --warmup 1s

# --- summary ----------------------------------------------------------------------------------
say "summary"
RSS_END=$(rss "$RAVPND_PID")
python3 - "$RESULTS" "$FEATURES" "$FR_VERSION" "$CONCURRENCY" "$THREADS" "$(nproc)" \
  "$RSS_START" "$RSS_IMPORTED" "$RSS_PRIMED" "$RSS_END" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$DAEMON_HALF" <<'EOF'
import math
import sys
from results import Results, ratio_text
path, features, fr_version, conc, threads, cpus, r0, r1, r2, r3, loadavg, daemon_half = sys.argv[1:]
res = Results(path)
rs, by, med, lat = res.runs, res.by, res.med, res.lat
bad = [r for r in rs if r["invalid"] or r["timeouts"] or r.get("skipped") or r.get("stray") or r.get("send_errors")
       or (r["reject"] and not r["label"].startswith("prime"))]
print(f"machine: {cpus} CPUs, load driver {threads} thread(s); FreeRADIUS {fr_version}; ravpnd features: {features}")
print("req/s: accepts per second (rejects are answered faster and are no throughput); a ratio is "
      "refused when a run it compares had rejects")
def closed(suffix, heading):
    """The closed-loop rounds whose labels end in `suffix`: medians and ratios."""
    print(f"{heading}, {conc} in flight, median of {len(by.get('ravpnd' + suffix, []))} rounds:")
    for label in (l + suffix for l in ("ravpnd", "freeradius", "null")):
        runs = " ".join(f"{r['throughput_rps']:.0f}" for r in by.get(label, []))
        print(f"  {label:<17} {med(label, 'throughput_rps'):>9.0f} req/s  (runs: {runs})  "
              f"p50 {lat(label, 'p50'):.0f} µs  p99 {lat(label, 'p99'):.0f} µs  "
              f"server CPU {med(label, 'server_cpu_us_per_req'):.1f} µs/req  driver CPU {med(label, 'driver_cpu_us_per_req'):.1f} µs/req  "
              f"busy: server {med(label, 'server_cores'):.2f}, driver {med(label, 'driver_cores'):.2f} cores  "
              f"other load {med(label, 'other_busy_cores'):.2f} cores")
    ratio = lambda a, b, key="throughput_rps": res.ratio(a + suffix, b + suffix, key)
    # Each round's runs in the order they ran (reversed every other round), and its ratio.
    for i, rnd in enumerate(res.rounds([l + suffix for l in ("ravpnd", "freeradius", "null")]), 1):
        r = {x["label"][:len(x["label"]) - len(suffix)]: [x] for x in rnd}
        order = " → ".join(f"{x['label']} {x['throughput_rps']:.0f}" for x in rnd)
        print(f"  round {i}: {order}; ravpnd/FreeRADIUS "
              f"{ratio_text(r.get('ravpnd', []), r.get('freeradius', [])) if len(r) == 3 else 'incomplete'}")
    print(f"  ratio ravpnd/FreeRADIUS     {ratio('ravpnd', 'freeradius')}")
    print(f"  ratio ravpnd/null responder {ratio('ravpnd', 'null')}")
    # The most any server doing the protocol's work could show against FreeRADIUS in this
    # harness on this machine, in this placement.
    print(f"  ratio null responder/FreeRADIUS {ratio('null', 'freeradius')} (the harness's ceiling for the first ratio)")
    print(f"  server CPU per request ravpnd/FreeRADIUS {ratio('ravpnd', 'freeradius', 'server_cpu_us_per_req')}")
    # A driver that used its whole CPU sets the rate: the ratio is then a lower bound, and the
    # CPU per request says more.
    full = [l for l in ("ravpnd", "null") if suffix and med(l + suffix, "driver_cores") >= 0.95]
    if full:
        print(f"  the driver's CPU was full in the {' and '.join(full)} rounds: those rates are the driver's, "
              "the ratios above lower bounds; the CPU per request compares the servers")
closed("", "closed loop, driver and servers sharing every CPU")
if by.get("ravpnd-split"):
    closed("-split", "closed loop, split: each server alone on CPU 1, the driver (1 thread) on CPU 0")
print("latency: to the answer's arrival at the driver's socket (the kernel's stamp); (read …): to the "
      "driver's read of it, which adds the driver's own wake-up")
print("one request in flight (-poll: the driver polls for the answer instead of sleeping):")
for label in ("ravpnd-c1", "freeradius-c1", "null-c1",
              "ravpnd-c1-poll", "freeradius-c1-poll", "null-c1-poll"):
    print(f"  {label:<18} p50 {lat(label, 'p50'):>6.0f} µs (read {lat(label, 'p50', 'read'):>4.0f})"
          f"  p99 {lat(label, 'p99'):>6.0f} µs (read {lat(label, 'p99', 'read'):>4.0f})"
          f"  p99.9 {lat(label, 'p999'):>6.0f} µs  ({med(label, 'throughput_rps'):.0f} req/s)")
print("open loop, median of the rounds (p99 per round in brackets, in the order run); busy: cores busy "
      "on the machine / the driver's; late: the driver's late sends p99, counted in the latency:")
def over(a, b):
    """a / b as text; "n/a" where b is 0 (a run with nothing answered) or missing (NaN)."""
    return "n/a" if not b or math.isnan(b) else f"{a / b:.2f}"
def p99s(label):
    return " ".join(f"{r['latency_us']['p99']:.0f}" for r in by.get(label, []))
for label in ("ravpnd-half", "null-at-ravpnd-half", "ravpnd-quarter", "null-at-ravpnd-quarter",
              "freeradius-half", "null-half"):
    r = by.get(label, [{}])[0]
    print(f"  {label:<22} {r.get('mode', '')}: p50 {lat(label, 'p50'):.0f} µs  p99 {lat(label, 'p99'):.0f} µs "
          f"[{p99s(label)}] (read {lat(label, 'p99', 'read'):.0f}; on the wire {lat(label, 'p99', 'wire'):.0f})  "
          f"p99.9 {lat(label, 'p999'):.0f} µs  busy {med(label, 'machine_busy_cores'):.2f} / "
          f"{med(label, 'driver_cores'):.2f}  late {lat(label, 'p99', 'late'):.0f} µs  "
          f"skipped {sum(x.get('skipped', 0) for x in by.get(label, []))}")
for frac in ("half", "quarter"):
    a, b = by.get(f"ravpnd-{frac}", []), by.get(f"null-at-ravpnd-{frac}", [])
    if a and b:
        per = " ".join(over(x["latency_us"]["p99"], y["latency_us"]["p99"]) for x, y in zip(a, b))
        print(f"  p99 ravpnd / null responder at ravpnd's {frac} rate: "
              f"{over(lat(f'ravpnd-{frac}', 'p99'), lat(f'null-at-ravpnd-{frac}', 'p99'))} (rounds {per})")
print("  ravpnd's own histograms over each ravpnd-half run (its warm-up included):")
for line in daemon_half.splitlines():
    print(f"    {line}")
frss = [r["server_rss_kb"] for r in by.get("freeradius", []) if r.get("server_rss_kb")]
mib = lambda kb: int(kb) / 1024
print(f"ravpnd VmRSS: {mib(r0):.1f} MiB at start, {mib(r1):.1f} after the import (argon2 hashing), "
      f"{mib(r2):.1f} after priming (argon2 verifying), {mib(r3):.1f} at the end; "
      f"FreeRADIUS {max(frss) / 1024 if frss else float('nan'):.1f} MiB")
print(f"load average at the end: {loadavg}")
if bad:
    print(f"WARNING: {len(bad)} run(s) had invalid answers, timeouts, skipped or unmatched sends, or rejects:")
    for r in bad:
        print(f"  {r['label']}: reject {r['reject']} invalid {r['invalid']} timeouts {r['timeouts']} skipped {r.get('skipped', 0)} stray {r.get('stray', 0)} send errors {r.get('send_errors', 0)} first reject {r['first_reject']!r}")
EOF
