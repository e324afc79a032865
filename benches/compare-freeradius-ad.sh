# shellcheck shell=bash
# The Active Directory workload of compare-freeradius.sh (WORKLOAD=ad): sourced by it after
# the common setup (ravpnd and the load driver built, free ports picked, cleanup trap set).
#
# - A Samba AD DC provisioned in the temp dir, listening on plain LDAP (389) on a loopback
#   address of its own (127.60.X.Y; Samba's LDAP port cannot be changed), LDAP only
#   (`server services = ldap`), log level 0; $USERS users user0… with $PASSWORD, created
#   offline through Samba's python before the DC starts.
# - FreeRADIUS 3.2 with rlm_ldap (Debian freeradius-ldap) the usual way: `ldap` in authorize
#   (search for the user as the admin), `Auth-Type LDAP` in authenticate (bind as the user on
#   a pooled connection, which rlm_ldap re-binds as the admin before its next search).
# - ravpnd with `[auth] source = "active_directory"` (tls = "none", the same DC): a bind as the
#   user by UPN on its user-bind pool; nothing is cached on success (every accept is a bind).
# - The DC's own ceiling: many parallel simple binds on persistent connections by a small
#   raw-LDAP python client, $CEILING_PROCS processes (no RADIUS at all).
# Rounds alternate ravpnd, FreeRADIUS and the ceiling; the DC's CPU (all samba processes)
# is read from /proc around each run. Every password is right: the lockout guard, the
# pre-check (off) and AD's lockout never come into play.

AD_REALM=BENCH.EXAMPLE.COM
AD_DOMAIN=bench.example.com
AD_BASE=DC=bench,DC=example,DC=com
AD_ADMIN_PASSWORD=${AD_ADMIN_PASSWORD:-Adm1n-Bench-Pass!}
CEILING_CONNS=${CEILING_CONNS:-16}
# Extra `[auth.active_directory]` lines for ravpnd (tuning experiments), e.g. "pool_size = 64".
AD_EXTRA=${AD_EXTRA:-}

# --- prerequisites ---------------------------------------------------------------------------
missing=()
command -v samba >/dev/null 2>&1 || missing+=(samba samba-dsdb-modules samba-ad-provision)
command -v ldapsearch >/dev/null 2>&1 || missing+=(ldap-utils)
[ -e /usr/lib/freeradius/rlm_ldap.so ] || missing+=(freeradius-ldap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }
fi
[ "$(id -u)" -eq 0 ] || { echo "WORKLOAD=ad runs Samba, which binds port 389: run as root" >&2; exit 1; }

# --- the domain controller --------------------------------------------------------------------
DC_ADDR=$(python3 -c '
import socket
for x in range(1, 255):
    a = f"127.60.{x}.1"
    s = socket.socket()
    try:
        s.bind((a, 389)); s.close(); print(a); break
    except OSError:
        s.close()')
[ -n "$DC_ADDR" ] || { echo "no free loopback address 127.60.X.1 for port 389" >&2; exit 1; }
SD=$WORK/samba
say "Samba AD DC on $DC_ADDR:389: provisioning $AD_REALM (~20 s)"
started=$(date +%s)
samba-tool domain provision --realm=$AD_REALM --domain=BENCH --adminpass="$AD_ADMIN_PASSWORD" \
  --server-role=dc --dns-backend=NONE --host-name=dc1 --base-schema=2008_R2 \
  --option="interfaces=lo" --option="bind interfaces only=yes" --targetdir="$SD" > "$WORK/provision.log" 2>&1 \
  || { cat "$WORK/provision.log" >&2; exit 1; }
mkdir -p "$SD/run" "$SD/cache"
cat > "$SD/etc/smb.conf" <<EOF
[global]
	netbios name = DC1
	workgroup = BENCH
	realm = $AD_REALM
	server role = active directory domain controller
	server services = ldap
	interfaces = $DC_ADDR/8
	bind interfaces only = yes
	ldap server require strong auth = no
	tls enabled = no
	private dir = $SD/private
	binddns dir = $SD/bind-dns
	state directory = $SD/state
	cache directory = $SD/cache
	lock directory = $SD
	pid directory = $SD/run
	ncalrpc dir = $SD/run/ncalrpc
	winbindd socket directory = $SD/run/winbindd
	ntp signd socket directory = $SD/run/ntp_signd
	log level = 0
EOF
say "creating $USERS directory users (Samba's python, offline; ~60 ms each)"
/usr/bin/python3 - "$SD/etc/smb.conf" "$USERS" "$PASSWORD" <<'EOF'
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
conf, n, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lp = LoadParm(); lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
for i in range(n):
    db.newuser(f"user{i}", pw)
EOF
samba -F -s "$SD/etc/smb.conf" > "$SD/samba.log" 2>&1 &
SAMBA_PID=$!
PIDS+=("$SAMBA_PID")
dc_bind() { # a simple bind as user0 and a root DSE read
  ldapsearch -x -H "ldap://$DC_ADDR" -D "user0@$AD_DOMAIN" -w "$PASSWORD" -b "" -s base dnsHostName >/dev/null
}
for _ in $(seq 300); do
  dc_bind 2>/dev/null && break
  kill -0 "$SAMBA_PID" 2>/dev/null || { cat "$SD/samba.log" >&2; exit 1; }
  sleep 0.2
done
dc_bind
echo "DC ready with $USERS users in $(( $(date +%s) - started ))s" >&2
# CPU ticks of every samba process: the root process and its descendants (prefork workers).
dc_ticks() {
  python3 - "$SAMBA_PID" <<'EOF'
import os, sys
root, stat = int(sys.argv[1]), {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stat[int(p)] = (int(f[1]), int(f[11]) + int(f[12]))  # ppid, utime + stime
tree, grew = {root}, True
while grew:
    more = {p for p, (pp, _) in stat.items() if pp in tree} - tree
    tree |= more
    grew = bool(more)
print(sum(stat[p][1] for p in tree if p in stat))
EOF
}

# --- ravpnd -----------------------------------------------------------------------------------
say "ravpnd: [auth] source = \"active_directory\" on the DC, $USERS users and devices imported"
mkdir -p "$WORK/ravpnd"
RCONF=$WORK/ravpnd/ravpnd.toml
cat > "$RCONF" <<EOF
[radius]
auth_addr = "127.0.0.1:$RAVPND_PORT"
acct_addr = "127.0.0.1:$ACCT_PORT"

[store]
path = "$WORK/ravpnd/data"

[admin]
addr = "127.0.0.1:$ADMIN_PORT"

[auth]
source = "active_directory"

[auth.active_directory]
primary_host = "dc1.$AD_DOMAIN"
primary_address = "$DC_ADDR"
domain = "$AD_DOMAIN"
admin_password = "$AD_ADMIN_PASSWORD"
tls = "none"
$AD_EXTRA

[registration]
auto_register = true
notify_on_failure = false

[log]
level = "warn"

[[pools]]
name = "bench"
network = "10.8.0.0/16"

[dns]
primary = "10.0.0.53"
secondary = "10.0.0.54"

[[clients]]
name = "bench"
address = "127.0.0.1"
secret = "$SECRET"
require_message_authenticator = true
EOF
"$RAVPND" --config "$RCONF" check-config >&2
"$RAVPND" --config "$RCONF" serve 2> "$WORK/ravpnd/log" &
RAVPND_PID=$!
PIDS+=("$RAVPND_PID")
wait_ravpnd "$RCONF" "$RAVPND_PORT"
python3 - "$WORK/ravpnd" "$USERS" <<'EOF'
import sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/users.csv", "w") as f:
    f.write("name\n" + "".join(f"user{i}\n" for i in range(n)))
with open(f"{d}/devices.csv", "w") as f:
    f.write("name,type,serial,user\n")
    for i in range(n):
        f.write(f"dev{i},windows,{i:064X},user{i}\n")
EOF
# The import checks every name against the directory (no password: it lives there).
"$RAVPND" --config "$RCONF" import users "$WORK/ravpnd/users.csv" >&2
"$RAVPND" --config "$RCONF" import devices "$WORK/ravpnd/devices.csv" >/dev/null

# --- FreeRADIUS with rlm_ldap -------------------------------------------------------------------
say "FreeRADIUS $FR_VERSION with rlm_ldap on the DC"
FR=$WORK/freeradius
mkdir -p "$FR/log" "$FR/run"
cp -r /etc/freeradius/3.0 "$FR/raddb"
sed -i -e "s|^logdir = .*|logdir = $FR/log|" -e "s|^run_dir = .*|run_dir = $FR/run|" \
  -e 's|^\(\s*\)user = freerad|\1#user = freerad|' -e 's|^\(\s*\)group = freerad|\1#group = freerad|' \
  "$FR/raddb/radiusd.conf"
find "$FR/raddb/mods-enabled" -mindepth 1 \( -name pap -o -name always -o -name expr \) -prune -o -exec rm -f {} +
rm -f "$FR/raddb/sites-enabled/"*
# Debian's mods-available/ldap with the server, admin and user search set for AD; the pool
# as large as FreeRADIUS's thread pool (32), opened at start.
cat > "$FR/raddb/mods-enabled/ldap" <<EOF
ldap {
	server = '$DC_ADDR'
	port = 389
	identity = 'Administrator@$AD_DOMAIN'
	password = '$AD_ADMIN_PASSWORD'
	base_dn = '$AD_BASE'
	sasl { }
	update {
		control:Password-With-Header	+= 'userPassword'
	}
	user_dn = "LDAP-UserDn"
	user {
		base_dn = "\${..base_dn}"
		filter = "(&(objectClass=user)(sAMAccountName=%{%{Stripped-User-Name}:-%{User-Name}}))"
		scope = 'sub'
	}
	options {
		chase_referrals = no
		rebind = no
		use_referral_credentials = no
		res_timeout = 5
		srv_timelimit = 5
		net_timeout = 2
		idle = 60
		probes = 3
		interval = 3
		ldap_debug = 0x0000
	}
	tls { start_tls = no }
	pool {
		start = 32
		min = 32
		max = 32
		spare = 32
		uses = 0
		retry_delay = 1
		lifetime = 0
		idle_timeout = 0
	}
}
EOF
cat > "$FR/raddb/sites-enabled/bench" <<EOF
server bench {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = $FR_PORT
	}
	authorize {
		ldap
		if ((ok || updated) && User-Password) {
			update control {
				&Auth-Type := ldap
			}
		}
	}
	authenticate {
		Auth-Type LDAP {
			ldap
		}
	}
	post-auth {
		update reply {
			&ASA-Primary-DNS := 10.0.0.53
			&ASA-Secondary-DNS := 10.0.0.54
			&Reply-Message := "accepted"
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
freeradius -C -d "$FR/raddb" -l stdout >/dev/null
freeradius -f -d "$FR/raddb" -l "$FR/log/radius.log" > "$FR/log/stdout" 2>&1 &
FR_PID=$!
PIDS+=("$FR_PID")
wait_udp "$FR_PORT"

# --- runs -------------------------------------------------------------------------------------
RESULTS=${RESULTS:-$WORK/results.jsonl}
: > "$RESULTS"
CLK_TCK=$(getconf CLK_TCK)
drive() { # LABEL PORT PID ARGS...: one run, its JSON (plus the DC's CPU) appended to $RESULTS
  local label=$1 port=$2 pid=$3 t0 t1 out
  shift 3
  t0=$(dc_ticks)
  out=$("$LOAD" --bench --target "127.0.0.1:$port" --secret "$SECRET" --users "$USERS" \
    --password "$PASSWORD" --threads "$THREADS" --server-pid "$pid" --label "$label" --json "$@")
  t1=$(dc_ticks)
  python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r["dc_cpu_s"] = (int(sys.argv[2]) - int(sys.argv[3])) / int(sys.argv[4]); print(json.dumps(r))' \
    "$out" "$t1" "$t0" "$CLK_TCK" >> "$RESULTS"
}
# The DC alone: $CEILING_PROCS python processes (one would be starved of CPU before the DC on
# a busy machine) with $CEILING_CONNS connections in all, binding as user<i> back to back.
CEILING_PROCS=${CEILING_PROCS:-4}
cat > "$WORK/ceiling.py" <<'EOF'
import asyncio, json, sys, time
host, domain, n, pw, conns, dur, warm, first, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
def tlv(tag, body):
    l = len(body)
    head = bytes([l]) if l < 128 else bytes([0x80 | ((l.bit_length() + 7) // 8)]) + l.to_bytes((l.bit_length() + 7) // 8, "big")
    return bytes([tag]) + head + body
def bind(msgid, name):
    op = tlv(0x60, tlv(0x02, b"\x03") + tlv(0x04, name) + tlv(0x80, pw))
    return tlv(0x30, tlv(0x02, msgid.to_bytes(4, "big")) + op)
def skip_len(b, i):  # index after the length octets at b[i]
    return i + 1 + (b[i] & 0x7F if b[i] & 0x80 else 0)
async def read_msg(r):
    h = await r.readexactly(2)
    l = h[1]
    if l & 0x80:
        l = int.from_bytes(await r.readexactly(l & 0x7F), "big")
    return await r.readexactly(l)
counts = {"ok": 0, "fail": 0}
async def worker(k, start, end):
    r, w = await asyncio.open_connection(host, 389)
    i, mid = first + k * step, 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        mid += 1
        w.write(bind(mid, f"user{i % n}@{domain}".encode()))
        i += conns * step
        m = await read_msg(r)             # messageID, then bindResponse [APPLICATION 1]
        j = 2 + m[1]                      # the bindResponse tag (messageID in short form)
        k = skip_len(m, j + 1)            # its first element: resultCode ENUMERATED
        rc = m[k + 2]
        if now >= start:
            counts["ok" if rc == 0 else "fail"] += 1
    w.close()
async def main():
    t = time.monotonic()
    start, end = t + warm, t + warm + dur
    await asyncio.gather(*(worker(k, start, end) for k in range(conns)))
asyncio.run(main())
print(counts["ok"], counts["fail"])
EOF
ceiling() {
  local t0 t1 p clients=()
  t0=$(dc_ticks)
  for p in $(seq 0 $((CEILING_PROCS - 1))); do
    python3 "$WORK/ceiling.py" "$DC_ADDR" "$AD_DOMAIN" "$USERS" "$PASSWORD" $((CEILING_CONNS / CEILING_PROCS)) \
      "${DURATION%s}" "${WARMUP%s}" "$p" "$CEILING_PROCS" > "$WORK/ceiling.$p" &
    clients+=($!)
  done
  wait "${clients[@]}"
  t1=$(dc_ticks)
  cat "$WORK"/ceiling.[0-9]* | python3 -c 'import json, sys
ok = fail = 0
for line in sys.stdin:
    a, b = line.split(); ok += int(a); fail += int(b)
dur = float(sys.argv[1].rstrip("s"))
print(json.dumps({"label": "dc-ceiling", "throughput_rps": ok / dur, "fail": fail,
                  "conns": int(sys.argv[2]), "dc_cpu_s": (int(sys.argv[3]) - int(sys.argv[4])) / int(sys.argv[5])}))' \
    "$DURATION" "$CEILING_CONNS" "$t1" "$t0" "$CLK_TCK" >> "$RESULTS"
}

say "warming up: 3 s on each server (connection pools opened, caches of the DC filled)"
drive "prime-ravpnd" "$RAVPND_PORT" "$RAVPND_PID" --concurrency "$CONCURRENCY" --duration 3s --warmup 0s
drive "prime-freeradius" "$FR_PORT" "$FR_PID" --concurrency "$CONCURRENCY" --duration 3s --warmup 0s

say "throughput: $ROUNDS rounds x (ravpnd, FreeRADIUS rlm_ldap, DC ceiling; reversed every other round), closed loop, $CONCURRENCY in flight"
for round in $(seq "$ROUNDS"); do
  mapfile -t order < <(in_round_order "$round" ravpnd freeradius dc-ceiling)
  echo "round $round of $ROUNDS, in this order: ${order[*]}" >&2
  for s in "${order[@]}"; do
    case $s in
      ravpnd) drive "ravpnd" "$RAVPND_PORT" "$RAVPND_PID" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" ;;
      freeradius) drive "freeradius" "$FR_PORT" "$FR_PID" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" ;;
      dc-ceiling) ceiling ;;
    esac
  done
done
say "latency: one request in flight"
drive "ravpnd-c1" "$RAVPND_PORT" "$RAVPND_PID" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s
drive "freeradius-c1" "$FR_PORT" "$FR_PID" --concurrency 1 --duration "$LATENCY_DURATION" --warmup 1s

# ravpnd's own count of directory binds against its accepts: every accept must be a bind
# (no cache; identical requests in flight at once would share one, which 64 in flight over
# $USERS users round robin never are).
python3 - "$ADMIN_PORT" >> "$RESULTS" <<'EOF'
import json, sys, urllib.request
m = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
def value(prefix):
    return sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(prefix))
print(json.dumps({"label": "ravpnd-counts",
                  "binds": value('ravpnd_directory_bind_duration_seconds_count{server="primary"}'),
                  "accepts": value('ravpnd_requests_total{outcome="accept",reason="accepted",type="access"}')}))
EOF

# --- summary ----------------------------------------------------------------------------------
say "summary (AD workload)"
python3 - "$RESULTS" "$FR_VERSION" "$CONCURRENCY" "$THREADS" "$(nproc)" "$USERS" "$DURATION" "$WARMUP" \
  "$CEILING_CONNS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(samba --version)" \
  "$(grep -c WARN "$WORK/ravpnd/log" || true)" <<'EOF'
import json, statistics, sys
from results import Results, rejected
path, fr_version, conc, threads, cpus, users, dur, warm, cconns, loadavg, samba, warns = sys.argv[1:]
secs = float(dur.rstrip("s")) + float(warm.rstrip("s"))
rs = [json.loads(l) for l in open(path) if l.strip()]
by = {}
for r in rs:
    by.setdefault(r["label"], []).append(r)
def med(label, f):
    v = [f(r) for r in by.get(label, [])]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")
def dc_us(r):  # the DC's CPU per answer, the warm-up taken at the measured rate
    return r["dc_cpu_s"] * 1e6 / (r["throughput_rps"] * secs) if r["throughput_rps"] else None
print(f"machine: {cpus} CPUs; {samba}; FreeRADIUS {fr_version} rlm_ldap; {users} users; driver {threads} thread(s)")
print(f"closed loop, {conc} in flight, median of {len(by.get('ravpnd', []))} rounds (every request one cold bind):")
for label in ("ravpnd", "freeradius"):
    runs = " ".join(f"{r['throughput_rps']:.0f}" for r in by.get(label, []))
    print(f"  {label:<11} {med(label, lambda r: r['throughput_rps']):>7.0f} req/s  (runs: {runs})  "
          f"p50 {med(label, lambda r: r['latency_us']['p50']):.0f} µs  p99 {med(label, lambda r: r['latency_us']['p99']):.0f} µs  "
          f"server CPU {med(label, lambda r: r['server_cpu_us_per_req']):.0f} µs/req  DC CPU {med(label, dc_us):.0f} µs/req  "
          f"other load {med(label, lambda r: r['other_busy_cores']):.2f} cores")
runs = " ".join(f"{r['throughput_rps']:.0f}" for r in by.get("dc-ceiling", []))
print(f"  DC ceiling  {med('dc-ceiling', lambda r: r['throughput_rps']):>7.0f} binds/s ({cconns} connections, raw LDAP, no RADIUS; runs: {runs})  "
      f"DC CPU {med('dc-ceiling', dc_us):.0f} µs/bind")
for i, rnd in enumerate(Results(path).rounds(("ravpnd", "freeradius", "dc-ceiling")), 1):
    print(f"  round {i}: " + " → ".join(f"{r['label']} {r['throughput_rps']:.0f}" for r in rnd))
t = {l: med(l, lambda r: r["throughput_rps"]) for l in ("ravpnd", "freeradius", "dc-ceiling")}
# req/s are accepts per second: a reject (a wrong password, an unknown user) is no throughput,
# and a ratio with rejects on either side is refused.
def ratio(a, b):
    why = rejected(by.get(a, []) + by.get(b, []))
    return f"INVALID, no ratio ({why})" if why else f"{t[a] / t[b]:.2f}"
print(f"  ratio ravpnd/FreeRADIUS      {ratio('ravpnd', 'freeradius')}")
print(f"  ratio ravpnd/DC ceiling      {ratio('ravpnd', 'dc-ceiling')}")
print(f"  ratio FreeRADIUS/DC ceiling  {ratio('freeradius', 'dc-ceiling')}")
print("one request in flight:")
for label in ("ravpnd-c1", "freeradius-c1"):
    print(f"  {label:<15} p50 {med(label, lambda r: r['latency_us']['p50']):>6.0f} µs  p99 {med(label, lambda r: r['latency_us']['p99']):>6.0f} µs"
          f"  ({med(label, lambda r: r['throughput_rps']):.0f} req/s)")
c = by.get("ravpnd-counts", [{}])[0]
print(f"ravpnd: {c.get('binds', 0):.0f} directory binds for {c.get('accepts', 0):.0f} accepts (every accept one bind: no cache)")
print(f"ravpnd log: {warns} warning line(s); load average at the end: {loadavg}")
bad = [r for r in rs if r["label"] != "ravpnd-counts" and not r["label"].startswith("prime") and (r.get("invalid") or r.get("timeouts") or r.get("reject") or r.get("fail"))]
if bad:
    print(f"WARNING: {len(bad)} run(s) had invalid answers, timeouts, rejects or failed binds:")
    for r in bad:
        print(f"  {r['label']}: reject {r.get('reject')} invalid {r.get('invalid')} timeouts {r.get('timeouts')} "
              f"fail {r.get('fail')} first reject {r.get('first_reject')!r}")
EOF
