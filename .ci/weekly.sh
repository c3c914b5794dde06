#!/usr/bin/env bash
# One experiment's weekly proof, here or in the weekly workflow: the three verdicts, each run
# read through a real Prometheus, and everything a person needs on a red week in one folder.
#
#   .ci/weekly.sh EXPERIMENT PROFILE [MODE...]
#
# EXPERIMENT  a file in experiments/ (as for .ci/run-experiment.sh)
# PROFILE     a var file in .ci/profiles/: `weekly` in the workflow, `ci` in the test suite
# MODE...     on, off and/or cut (default: all three, in that order)
#
# For each mode, in order:
# 1. Prometheus (Debian's binary, `prometheus` on PATH or $PROMETHEUS) starts on
#    127.0.0.1:$PROMETHEUS_PORT (default 9090) with its own tsdb in a temporary folder,
#    before `chaos run`: it scrapes every second whatever the gateway's /targets lists
#    (`http_sd_configs`, refreshed every second). The experiment's control starts the
#    reference system later, so the first refreshes fail (connection refused, retried); once
#    the gateway answers, the next refresh finds it and every cell, all scraped within about
#    two seconds, long before the warm-up (14 s in ci, 30 s in weekly) ends and the first
#    probe reads a window.
#    The configuration comes from chaosemergence.observe.prometheus_config (the same as
#    `chaosemergence serve --prometheus`) and evaluates the alert rules of
#    chaosemergence/observe/alerts.yml, so the snapshot holds the run's ALERTS series.
# 2. `.ci/run-experiment.sh EXPERIMENT PROFILE MODE` with CHAOSEMERGENCE_PROMETHEUS_URL set, so
#    every probe with a Prometheus path (the windowed probes, latency_percentile) reads
#    through it, and with a fresh CHAOSEMERGENCE_HOME and HOME (whose ~/.locust.conf asks
#    Locust for its HTML report: chaosemergence.traffic strips LOCUST_* variables). The
#    script judges the journal as that mode of the three verdicts: on holds and its defenses
#    activated, off deviates on a harm probe, cut holds.
# 3. The artifacts go to $RESULTS_DIR/<experiment>-<mode>/ (RESULTS_DIR defaults to results/):
#    run.txt (the run's output and verdict), serve-*.log (the reference system's log),
#    cells/ (each cell's log, its defense events as JSON lines, the settings it ran with),
#    traffic-*/ (Locust's CSV stats and history, final JSON, HTML report and logs), and
#    prometheus/ (its config and log, up.json: every target it scraped and whether it was ever
#    up, and snapshot/: a TSDB snapshot taken through the admin API, readable with
#    `promtool tsdb dump` or a Prometheus started on it). The journal, the chaostoolkit log
#    and run-*.json stay beside the folders, where .ci/run-experiment.sh writes them, so
#    `python -m chaosemergence.report $RESULTS_DIR` reads them.
# 4. After the last mode: $RESULTS_DIR/report-<experiment>.html, the HTML report of the modes'
#    journals overlaid on one time axis (`chaosemergence report`, docs/report.md).
#
# Exit 0: every mode gave its right verdict; 1: at least one did not (all modes still run);
# 2: usage error, or Prometheus or the port could not be set up.
# CHAOSEMERGENCE_URL (default http://127.0.0.1:8080) must be a loopback URL nothing answers yet.
# VENV selects the virtualenv (default .venv), as for .ci/run-experiment.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_EXPERIMENT="$ROOT/.ci/run-experiment.sh"

usage() {
  echo "usage: $0 EXPERIMENT PROFILE [on|off|cut ...]" >&2
  exit 2
}

fail_setup() {
  echo "weekly: $*" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
name="$(basename -- "$1")"
name="${name%.yaml}"
profile="$2"
shift 2
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(on off cut)
for mode in "${modes[@]}"; do
  [[ "$mode" == on || "$mode" == off || "$mode" == cut ]] || usage
done
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || usage
[[ -f "$ROOT/experiments/$name.yaml" ]] || { echo "no such experiment: $name" >&2; usage; }

url="${CHAOSEMERGENCE_URL:-http://127.0.0.1:8080}"
url="${url%/}"
[[ "$url" =~ ^http://(127\.0\.0\.1|localhost):([0-9]+)$ ]] ||
  fail_setup "CHAOSEMERGENCE_URL must be http://127.0.0.1:PORT, got $url"
prometheus_port="${PROMETHEUS_PORT:-9090}"
[[ "$prometheus_port" =~ ^[0-9]+$ ]] || fail_setup "PROMETHEUS_PORT must be a port, got $prometheus_port"
prometheus_url="http://127.0.0.1:$prometheus_port"
prometheus="${PROMETHEUS:-prometheus}"
command -v "$prometheus" >/dev/null || fail_setup "no $prometheus: apt-get install prometheus"
venv="${VENV:-$ROOT/.venv}"
results="${RESULTS_DIR:-$ROOT/results}"
mkdir -p "$results"
results="$(cd "$results" && pwd)"
[[ -e "$results/.gitignore" ]] || printf '*\n' >"$results/.gitignore"

work="$(mktemp -d "${TMPDIR:-/tmp}/weekly-$name.XXXXXX")"
prometheus_pid=""
stop_prometheus() {
  if [[ -n "$prometheus_pid" ]]; then
    kill -TERM "$prometheus_pid" 2>/dev/null || true
    wait "$prometheus_pid" 2>/dev/null || true
    prometheus_pid=""
  fi
}
cleanup() {
  stop_prometheus
  rm -rf -- "$work"
}
trap cleanup EXIT

# A system already answering would be reused by the experiment's control (and refused with
# loop=cut): each mode needs its own, started by the run.
if curl -fsS -m 2 -o /dev/null "$url/health" 2>/dev/null; then
  fail_setup "something already answers at $url: stop it or set CHAOSEMERGENCE_URL"
fi

start_prometheus() { # $1: the folder for its config and log; its tsdb goes to $2
  local folder="$1" tsdb="$2" waited=0
  # The one configuration (chaosemergence/observe/prometheus_config.py): /targets every
  # second, and the shipped alert rules evaluated (their state is in the TSDB snapshot).
  "$venv/bin/python" -m chaosemergence.observe.prometheus_config "$url/targets" \
    >"$folder/prometheus.yml"
  "$prometheus" --config.file="$folder/prometheus.yml" --storage.tsdb.path="$tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" --web.enable-admin-api \
    --log.level=warn >"$folder/prometheus.log" 2>&1 &
  prometheus_pid=$!
  until curl -fsS -m 2 -o /dev/null "$prometheus_url/-/ready" 2>/dev/null; do
    if ! kill -0 "$prometheus_pid" 2>/dev/null; then
      tail -n 20 "$folder/prometheus.log" >&2
      prometheus_pid=""
      fail_setup "prometheus exited at start (is port $prometheus_port free?)"
    fi
    ((waited += 1))
    [[ $waited -le 300 ]] || fail_setup "prometheus not ready after 60 s"
    sleep 0.2
  done
}

collect_prometheus() { # $1: the artifacts' prometheus folder; $2: its tsdb; $3: seconds run
  local folder="$1" tsdb="$2" seconds="$3" snapshot
  # Every target Prometheus found through /targets, and whether it was ever up in the run.
  curl -fsS -m 30 -G "$prometheus_url/api/v1/query" \
    --data-urlencode "query=max_over_time(up[${seconds}s])" >"$folder/up.json" ||
    echo "weekly: could not export up from prometheus" >&2
  if snapshot="$(curl -fsS -m 120 -X POST "$prometheus_url/api/v1/admin/tsdb/snapshot")"; then
    snapshot="$("$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["data"]["name"])' <<<"$snapshot")"
    mv -- "$tsdb/snapshots/$snapshot" "$folder/snapshot"
    mkdir -p "$folder/snapshot/wal" # so that `promtool tsdb dump` reads it as it is
  else
    echo "weekly: prometheus snapshot failed" >&2
  fi
}

collect_system() { # $1: CHAOSEMERGENCE_HOME of the run; $2: the artifacts folder
  local home="$1" out="$2" path
  for path in "$home"/serve-*.log; do
    [[ -e "$path" ]] && cp -- "$path" "$out/"
  done
  mkdir -p "$out/cells"
  for path in "$home"/run-*/cell-*.log "$home"/run-*/cell-*.events.jsonl "$home"/run-*/settings.json; do
    [[ -e "$path" ]] && cp -- "$path" "$out/cells/"
  done
  for path in "$home"/traffic-*/; do
    [[ -d "$path" ]] || continue
    local traffic
    traffic="$out/$(basename -- "$path")"
    mkdir -p "$traffic"
    # Locust's CSV stats and history, final JSON, HTML report and logs; the run's state file.
    find "$path" -maxdepth 1 -type f \( -name 'locust*' -o -name traffic.json \) \
      ! -name '*.lock' ! -name locust.ready -exec cp -- {} "$traffic/" \;
  done
  # Admin tokens and the cells' databases stay behind.
}

declare -A verdicts=()
wrong=()
for mode in "${modes[@]}"; do
  out="$results/$name-$mode"
  rm -rf -- "$out"
  mkdir -p "$out/prometheus"
  home="$work/home-$mode"
  mkdir -p "$home/user"
  printf 'html = locust_report.html\n' >"$home/user/.locust.conf"
  tsdb="$work/tsdb-$mode"

  echo "=== weekly: $name, $profile profile, mode $mode (prometheus at $prometheus_url)" >&2
  start_prometheus "$out/prometheus" "$tsdb"
  started=$SECONDS
  set +e
  HOME="$home/user" CHAOSEMERGENCE_HOME="$home" CHAOSEMERGENCE_URL="$url" \
    CHAOSEMERGENCE_PROMETHEUS_URL="$prometheus_url" RESULTS_DIR="$results" VENV="$venv" \
    "$RUN_EXPERIMENT" "$name" "$profile" "$mode" 2>&1 | tee "$out/run.txt"
  status=${PIPESTATUS[0]}
  set -e
  collect_prometheus "$out/prometheus" "$tsdb" $((SECONDS - started + 60))
  stop_prometheus
  collect_system "$home" "$out"

  verdict="$(grep -E "^three verdicts, $mode: " "$out/run.txt" | tail -n 1 || true)"
  verdicts[$mode]="${verdict:-no verdict (run-experiment.sh exited $status)}"
  [[ $status -eq 0 ]] || wrong+=("$mode")
done

# One HTML report of the modes' journals, overlaid on one time axis (docs/report.md); a
# report that cannot be written never changes the week's verdict.
journals=()
for mode in "${modes[@]}"; do
  if [[ -s "$results/journal-$name-$mode.json" ]]; then
    journals+=("$results/journal-$name-$mode.json")
  fi
done
if [[ ${#journals[@]} -gt 0 ]]; then
  "$venv/bin/python" -m chaosemergence.cli report "${journals[@]}" \
    -o "$results/report-$name.html" >&2 || echo "weekly: could not write the HTML report" >&2
fi

echo "=== weekly: $name ($profile)" >&2
for mode in "${modes[@]}"; do
  echo "  $mode: ${verdicts[$mode]}" >&2
done
if [[ ${#wrong[@]} -gt 0 ]]; then
  echo "weekly: wrong verdict in mode(s): ${wrong[*]}" >&2
  exit 1
fi
