#!/usr/bin/env bash
# tollgate benchmark harness (issues #7, #17). Builds tollgate and the bench tools in release, then
# for each configuration -- direct (generator -> sink, the baseline), pass-through, full
# pipeline (attributes full / compact), the 10 % LLM mix (pass-through and full), full pipeline
# without its batch stage, full with the ledger -- starts a fresh sink and a fresh tollgate, drives it (a) to saturation and (b) at a
# fixed rate, and writes the table into bench/RESULTS.md (between the run.sh markers; the rest
# of the file, e.g. profile notes, is kept).
#
# Sizes (environment):
#   SAT_SPANS=2000000        spans per saturation run
#   FIXED_RATE=10000         spans/s of the fixed-rate runs
#   FIXED_SECS=15            seconds of each fixed-rate run
#   SPANS_PER_REQUEST=100  ATTRS=11  CONCURRENCY=8  TENANTS=10  WORKFLOWS=20
#   MIXED_LLM_SHARE=0.1      share of LLM spans in the *mixed scenarios (the rest HTTP server spans)
#   GEN_THREADS=1  SINK_THREADS=1   runtime threads of the generator and the sink
#   BATCH_TIMEOUT=200ms      batch timeout of the full pipeline (the latency it adds)
#   EXPORT_COMPRESSION=none  tollgate -> sink compression (none | gzip | zstd)
#   PORT_BASE=24300          ports PORT_BASE..PORT_BASE+3 are used
#   SCENARIOS="direct passthrough full full_compact passthrough_mixed mixed mixed_compact full_nobatch full_ledger"
#   MODES="sat fixed"
#   BENCH_LEDGER_URL=sqlite:… (default: a fresh SQLite file per run) or postgres://… for
#   full_ledger
#   RESULTS=bench/RESULTS.md (set RESULTS= to print only)
#   PROFILE=release          cargo profile to build and run (bench-quick: no LTO, quicker
#                            to build; for A/B comparisons where both sides use it)
#   TOLLGATE_BIN=target/release/tollgate (another binary to measure)  SKIP_BUILD=1 (do not build)
set -euo pipefail
cd "$(dirname "$0")/.."

SAT_SPANS=${SAT_SPANS:-2000000}
FIXED_RATE=${FIXED_RATE:-10000}
FIXED_SECS=${FIXED_SECS:-15}
SPR=${SPANS_PER_REQUEST:-100}
ATTRS=${ATTRS:-11}
MIXED_LLM_SHARE=${MIXED_LLM_SHARE:-0.1}
CONCURRENCY=${CONCURRENCY:-8}
TENANTS=${TENANTS:-10}
WORKFLOWS=${WORKFLOWS:-20}
GEN_THREADS=${GEN_THREADS:-1}
SINK_THREADS=${SINK_THREADS:-1}
BATCH_TIMEOUT=${BATCH_TIMEOUT:-200ms}
EXPORT_COMPRESSION=${EXPORT_COMPRESSION:-none}
PORT_BASE=${PORT_BASE:-24300}
SCENARIOS=${SCENARIOS:-direct passthrough full full_compact passthrough_mixed mixed mixed_compact full_nobatch full_ledger}
MODES=${MODES:-sat fixed}
RESULTS=${RESULTS-bench/RESULTS.md}
PROFILE=${PROFILE:-release}

GW_PORT=$PORT_BASE
SINK_PORT=$((PORT_BASE + 1))
if [ -n "${BENCH_LEDGER_URL:-}" ]; then BENCH_LEDGER_URL_SET=1; fi
export BENCH_GW_ENDPOINT=127.0.0.1:$GW_PORT
export BENCH_SINK_ENDPOINT=127.0.0.1:$SINK_PORT
export BENCH_HEALTH_ENDPOINT=127.0.0.1:$((PORT_BASE + 2))
export BENCH_METRICS_ENDPOINT=127.0.0.1:$((PORT_BASE + 3))
export BENCH_BATCH_TIMEOUT=$BATCH_TIMEOUT
export BENCH_EXPORT_COMPRESSION=$EXPORT_COMPRESSION

command_line="$(printf '%q ' env ${TOLLGATE_BIN:+TOLLGATE_BIN="$TOLLGATE_BIN"} SAT_SPANS="$SAT_SPANS" FIXED_RATE="$FIXED_RATE" FIXED_SECS="$FIXED_SECS" \
  SPANS_PER_REQUEST="$SPR" ATTRS="$ATTRS" CONCURRENCY="$CONCURRENCY" TENANTS="$TENANTS" \
  WORKFLOWS="$WORKFLOWS" GEN_THREADS="$GEN_THREADS" SINK_THREADS="$SINK_THREADS" \
  BATCH_TIMEOUT="$BATCH_TIMEOUT" EXPORT_COMPRESSION="$EXPORT_COMPRESSION" MIXED_LLM_SHARE="$MIXED_LLM_SHARE" \
  PROFILE="$PROFILE" SCENARIOS="$SCENARIOS" MODES="$MODES" bench/run.sh)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== building tollgate and tollgate-bench ($PROFILE)"
  cargo build --profile "$PROFILE" --locked -p tollgate -p tollgate-bench --bins
fi
# TOLLGATE_BIN measures another build of tollgate (e.g. a copy of the previous commit's).
TG=${TOLLGATE_BIN:-target/$PROFILE/tollgate}
TB=target/$PROFILE/tollgate-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_port() { # port, what
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$2 did not listen on port $1" >&2
  return 1
}

cpu_ticks() { # pid -> utime+stime in clock ticks
  local rest
  rest=$(sed 's/^.*) //' "/proc/$1/stat")
  awk '{print $12 + $13}' <<<"$rest"
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

run_one() { # scenario mode
  local scenario=$1 mode=$2 spans rate name=$1-$2 nonce unique gw="" cpu0=0 cpu1=0 hwm=0 rss=0 ledger_rows=0
  local config=$1 llm_share=1
  case $scenario in
    mixed) config=full; llm_share=$MIXED_LLM_SHARE ;;
    mixed_compact) config=full_compact; llm_share=$MIXED_LLM_SHARE ;;
    passthrough_mixed) config=passthrough; llm_share=$MIXED_LLM_SHARE ;;
  esac
  if [ "$mode" = sat ]; then spans=$SAT_SPANS; rate=0; else spans=$((FIXED_RATE * FIXED_SECS)); rate=$FIXED_RATE; fi
  unique=$(( (spans + SPR - 1) / SPR * SPR ))
  nonce=$(( (RANDOM << 8 ^ RANDOM) & 0xffffff ))
  echo "== $name: $spans spans, rate ${rate:-max} (0 = max)"
  "$TB" --threads "$SINK_THREADS" sink --listen "$BENCH_SINK_ENDPOINT" --expect "$unique" --nonce "$nonce" \
    --idle-exit-secs 10 --report "$work/$name.sink.json" >/dev/null 2>"$work/$name.sink.log" &
  local sink=$!
  pids+=("$sink")
  wait_port "$SINK_PORT" sink || { cat "$work/$name.sink.log" >&2; return 1; }
  local target=$BENCH_SINK_ENDPOINT
  if [ "$scenario" = full_ledger ] && [ -z "${BENCH_LEDGER_URL_SET:-}" ]; then
    export BENCH_LEDGER_URL="sqlite:$work/$name.ledger.db"
  fi
  if [ "$scenario" != direct ]; then
    "$TG" --config "bench/configs/$config.yaml" >"$work/$name.tollgate.log" 2>&1 &
    gw=$!
    pids+=("$gw")
    wait_port "$GW_PORT" tollgate || { cat "$work/$name.tollgate.log" >&2; return 1; }
    target=$BENCH_GW_ENDPOINT
    cpu0=$(cpu_ticks "$gw")
  fi
  "$TB" --threads "$GEN_THREADS" gen --endpoint "$target" --spans "$spans" --rate "$rate" \
    --concurrency "$CONCURRENCY" --spans-per-request "$SPR" --attrs "$ATTRS" --tenants "$TENANTS" \
    --workflows "$WORKFLOWS" --llm-share "$llm_share" --nonce "$nonce" --key-file bench/configs/keys/bench-k1.hex \
    --report "$work/$name.gen.json" >/dev/null 2>"$work/$name.gen.log" || {
      echo "generator failed:" >&2; cat "$work/$name.gen.log" >&2; return 1; }
  wait "$sink" || { echo "sink failed:" >&2; cat "$work/$name.sink.log" >&2; return 1; }
  if [ -n "$gw" ]; then
    cpu1=$(cpu_ticks "$gw")
    hwm=$(hwm_kib "$gw")
    rss=$(rss_kib "$gw")
    ledger_rows=$(curl -s "http://$BENCH_METRICS_ENDPOINT/metrics" 2>/dev/null | awk '/^tollgate_ledger_rows_written_total/ {print $2}')
    kill -TERM "$gw"
    wait "$gw" || true
  fi
  local warnings
  warnings=$(grep -ciE 'warn|error' "$work/$name.tollgate.log" 2>/dev/null || true)
  cat >"$work/$name.meta.json" <<EOF
{"scenario":"$scenario","mode":"$mode","gw_cpu_ticks":$((cpu1 - cpu0)),"clk_tck":$(getconf CLK_TCK),
 "vmhwm_kib":$hwm,"vmrss_kib":$rss,"gateway_log_warnings":${warnings:-0},"ledger_rows":${ledger_rows:-0}}
EOF
}

for s in $SCENARIOS; do
  for m in $MODES; do
    run_one "$s" "$m"
  done
done

MIXED_LLM_SHARE=$MIXED_LLM_SHARE python3 - "$work" "$RESULTS" "$command_line" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, os, re, subprocess, sys, datetime
work, results, cmd, load_before, load_after = sys.argv[1:6]
rows = {}
for f in sorted(os.listdir(work)):
    m = re.match(r"(.+)-(sat|fixed)\.meta\.json$", f)
    if not m:
        continue
    name = f"{m.group(1)}-{m.group(2)}"
    load = lambda k: json.load(open(os.path.join(work, f"{name}.{k}.json")))
    rows[(m.group(1), m.group(2))] = (load("meta"), load("gen"), load("sink"))

def fmt(x, d=0):
    return "–" if x is None else f"{x:,.{d}f}"

SCEN = ("direct", "passthrough", "full", "full_compact", "passthrough_mixed", "mixed", "mixed_compact", "full_nobatch", "full_ledger")
order = [(s, mo) for s in SCEN for mo in ("sat", "fixed")]
base = rows.get(("direct", "fixed"))
lines = []
lines.append("| run | spans/s | gateway CPU-s / M spans | spans/s per gateway core | peak RSS (VmHWM) | e2e p50 / p99 | added p50 / p99 | lost | dup | rejected / failed | gen / sink CPU-s |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
summary = {}
for key in order:
    if key not in rows:
        continue
    meta, gen, sink = rows[key]
    dur = (sink["last_arrival_unix_ns"] - gen["start_unix_ns"]) / 1e9
    thr = sink["received_spans"] / dur if dur > 0 else 0
    cpu = meta["gw_cpu_ticks"] / meta["clk_tck"] if key[0] != "direct" else None
    cpu_m = cpu / sink["received_spans"] * 1e6 if cpu else None
    per_core = sink["received_spans"] / cpu if cpu else None
    hwm = meta["vmhwm_kib"] / 1024 if key[0] != "direct" else None
    p50, p99 = sink["latency_us_p50"] / 1000, sink["latency_us_p99"] / 1000
    added = "–"
    if base and key[1] == "fixed" and key[0] != "direct":
        b = base[2]
        added = f"{p50 - b['latency_us_p50']/1000:.2f} / {p99 - b['latency_us_p99']/1000:.2f} ms"
    lost = sink["missing_spans"]
    summary[key] = dict(thr=thr, per_core=per_core, lost=lost, cpu_m=cpu_m)
    lines.append(
        f"| {key[0]} {'saturation' if key[1]=='sat' else 'at ' + fmt(gen['target_rate']) + '/s'} "
        f"| {fmt(thr)} | {fmt(cpu_m, 2)} | {fmt(per_core)} | {fmt(hwm, 1) + ' MiB' if hwm else '–'} "
        f"| {p50:.2f} / {p99:.2f} ms | {added} | {lost} | {sink['duplicate_spans']} "
        f"| {gen['rejected_spans']} / {gen['failed_spans']} | {fmt(gen.get('cpu_s'),1)} / {fmt(sink.get('cpu_s'),1)} |")

checks = []
# Issue #17: CPU per span relative to pass-through on the same traffic, in this run.
for mode in ("sat", "fixed"):
    for s, b, target in (("full", "passthrough", 2.0), ("full_compact", "passthrough", 2.0),
                         ("mixed", "passthrough_mixed", 1.3), ("mixed_compact", "passthrough_mixed", 1.3)):
        x, y = summary.get((s, mode)), summary.get((b, mode))
        if x and y and x["cpu_m"] and y["cpu_m"]:
            r = x["cpu_m"] / y["cpu_m"]
            checks.append(f"- {s} / {b} CPU per span ({'saturation' if mode == 'sat' else 'fixed rate'}): "
                          f"{x['cpu_m']:.2f} / {y['cpu_m']:.2f} CPU-s per M spans = **{r:.2f}×** (target ≤ {target}×: {'met' if r <= target else 'not met'})")
ps, fs = summary.get(("passthrough", "sat")), summary.get(("full", "sat"))
if ps and fs:
    checks.append(f"- full / pass-through throughput at saturation: {fs['thr']/ps['thr']*100:.0f} % (target ≥ 70 %); "
                  f"per gateway core: {fs['per_core']/ps['per_core']*100:.0f} %")
if ps and ps["per_core"]:
    checks.append(f"- pass-through spans/s per gateway core: {ps['per_core']:,.0f} (target ≥ 250,000)")
if ("passthrough", "fixed") in rows and base:
    for s in SCEN[1:]:
        if (s, "fixed") in rows:
            m, g, k = rows[(s, "fixed")]
            checks.append(f"- {s} at {g['target_rate']:,}/s: added p99 {k['latency_us_p99']/1000 - base[2]['latency_us_p99']/1000:.2f} ms (target < 5 ms), peak RSS {m['vmhwm_kib']/1024:.1f} MiB (target < 100 MiB)")
fl = summary.get(("full_ledger", "sat"))
if fs and fl and fs["per_core"] and fl["per_core"]:
    m, g, k = rows[("full_ledger", "sat")]
    dur = (k["last_arrival_unix_ns"] - g["start_unix_ns"]) / 1e9
    checks.append(f"- full + ledger CPU per span / full: {fs['per_core']/fl['per_core']*100:.0f} % (target ≤ 130 %); "
                  f"ledger rows written at saturation: {m.get('ledger_rows', 0):,} in {dur:.1f} s = {m.get('ledger_rows', 0)/dur if dur > 0 else 0:,.0f} rows/s")
checks.append(f"- spans lost, all runs: {sum(v['lost'] for v in summary.values())} (target 0)")

cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
except OSError:
    commit = "unknown"
any_gen = next(iter(rows.values()))[1]
section = "\n".join([
    "<!-- run.sh:begin -->",
    f"Run of {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit {commit}.",
    "",
    f"Machine: `nproc` = {os.cpu_count()}, CPU: {cpu_model}; load average before / after: {load_before} / {load_after}.",
    f"Workload: {any_gen['spans_per_request']} spans per request, {any_gen['attrs_per_span']} attributes per span, "
    f"{any_gen['bytes_per_request']:,} bytes per request, {any_gen['concurrency']} concurrent requests; "
    f"5 spans per trace, one envelope per trace signed at sending (a saturation run of {any_gen['unique_spans']:,} spans carries "
    f"{max(g.get('distinct_envelopes', 0) for _, g, _ in rows.values()):,} distinct envelopes at most), 0–3 lineage hops or a retry hop; "
    f"the *mixed runs have {os.environ.get('MIXED_LLM_SHARE', '0.1')} LLM spans, the rest HTTP server spans, all enveloped.",
    "",
    "Command:",
    "",
    "```sh",
    cmd.strip(),
    "```",
    "",
    *lines,
    "",
    *checks,
    "<!-- run.sh:end -->",
])
print(section)
if results:
    text = open(results).read() if os.path.exists(results) else "# Benchmark results\n\n"
    if "<!-- run.sh:begin -->" in text:
        text = re.sub(r"<!-- run.sh:begin -->.*?<!-- run.sh:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(results, "w").write(text)
    print(f"\nwritten to {results}")
PY
