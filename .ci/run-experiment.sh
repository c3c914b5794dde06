#!/usr/bin/env bash
# The one command that runs an experiment: the weekly workflow runs it, the test suite checks
# that the workflow does, and people run it by hand.
#
#   .ci/run-experiment.sh EXPERIMENT PROFILE [on|off|cut]
#
# EXPERIMENT  a file in experiments/: `retry-storm`, `retry-storm.yaml` or
#             `experiments/retry-storm.yaml`
# PROFILE     a var file in .ci/profiles/: `ci` (short durations) or `weekly` (the seed's)
# on|off|cut  the mode (default `on`): `on` runs with the defenses on; `off` is the negative
#             control (`--var defenses=off`), which must deviate; `cut` keeps the trigger and
#             cuts the feedback loop, defenses off (`--var defenses=off --var loop=cut`), and
#             must hold: the three verdicts of docs/experiments.md.
#
# The journal goes to $RESULTS_DIR/journal-<experiment>-<mode>.json (RESULTS_DIR defaults to
# results/ in the repository); chaostoolkit-<experiment>-<mode>.log and
# run-<experiment>-<mode>.json (the profile, read by `python -m chaosemergence.report`) go
# beside it. `chaos` exits 0 on a failed action or a failed *before* hypothesis, so the run is
# judged by its journal, as that mode of the three verdicts
# (`python -m chaosemergence.verdict --mode MODE`): exit 0 only when the journal exists and
#   on   held (completed, not deviated, both steady states met, every activity succeeded)
#        and its `check_defense_activation` succeeded;
#   off  deviated on a harm probe (p99, failure radius, goodput, cells down, lost writes...)
#        after a hypothesis that held before the method;
#   cut  held (the activation check may fail: the defenses are off).
# Exit 1: the mode's verdict is wrong; 2: usage error or no journal written.
# VENV (default .venv in the repository) selects the environment whose `chaos` runs.
# EXTRA_VARS adds `--var` settings after the mode's, space-separated NAME=VALUE words (letters,
# digits and . _ - : only), e.g. EXTRA_VARS="scale=5": the same dynamics at five times the
# capacity and traffic (docs/scaling.md, "Experiments at scale").
# .ci/weekly.sh runs this once per mode with a real Prometheus and collects the artifacts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

names_in() {
  local file names=()
  for file in "$1"/*.yaml; do
    [[ -e "$file" ]] && names+=("$(basename -- "$file" .yaml)")
  done
  echo "${names[*]}"
}

usage() {
  echo "usage: $0 EXPERIMENT PROFILE [on|off|cut]" >&2
  echo "  experiments: $(names_in "$ROOT/experiments")" >&2
  echo "  profiles:    $(names_in "$ROOT/.ci/profiles")" >&2
  exit 2
}

[[ $# -eq 2 || $# -eq 3 ]] || usage
name="$(basename -- "$1")"
name="${name%.yaml}"
profile="$(basename -- "$2")"
profile="${profile%.yaml}"
mode="${3:-on}"
[[ "$mode" == on || "$mode" == off || "$mode" == cut ]] || usage
[[ "$name" =~ ^[A-Za-z0-9._-]+$ && "$profile" =~ ^[A-Za-z0-9._-]+$ ]] || usage

experiment="$ROOT/experiments/$name.yaml"
var_file="$ROOT/.ci/profiles/$profile.yaml"
[[ -f "$experiment" ]] || { echo "no such experiment: $experiment" >&2; usage; }
[[ -f "$var_file" ]] || { echo "no such profile: $var_file" >&2; usage; }

venv="${VENV:-$ROOT/.venv}"
results="${RESULTS_DIR:-$ROOT/results}"
mkdir -p "$results"
# Keep run output out of git even where .gitignore does not list the folder.
[[ -e "$results/.gitignore" ]] || printf '*\n' >"$results/.gitignore"
journal="$results/journal-$name-$mode.json"
log="$results/chaostoolkit-$name-$mode.log"
# Which profile produced the journal (the journal itself does not say): read by the report.
meta="$results/run-$name-$mode.json"
# A journal left by an earlier run must never be judged as this run's.
rm -f -- "$journal" "$meta"

command=("$venv/bin/chaos" --no-version-check --log-file "$log" run
  --journal-path "$journal" --var-file "$var_file")
if [[ "$mode" == off ]]; then
  command+=(--var defenses=off)
elif [[ "$mode" == cut ]]; then
  command+=(--var defenses=off --var loop=cut)
fi
extra_vars=()
read -r -a extra_vars <<<"${EXTRA_VARS:-}"
for var in "${extra_vars[@]}"; do
  [[ "$var" =~ ^[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?=[A-Za-z0-9._:-]*$ ]] || {
    echo "EXTRA_VARS: not a NAME=VALUE word (letters, digits, . _ - :): $var" >&2
    exit 2
  }
  command+=(--var "$var")
done
command+=("$experiment")

echo "+ ${command[*]}" >&2
status=0
"${command[@]}" || status=$?
# EXTRA_VARS, when given, as "vars" (their characters need no JSON escaping).
vars_json=""
[[ ${#extra_vars[@]} -eq 0 ]] || vars_json=", \"vars\": \"${extra_vars[*]}\""
printf '{"experiment": "%s", "profile": "%s", "mode": "%s"%s, "chaos_exit": %d}\n' \
  "$name" "$profile" "$mode" "$vars_json" "$status" >"$meta"

if [[ ! -s "$journal" ]]; then
  echo "no journal written at $journal (chaos exited $status)" >&2
  exit 2
fi
exec "$venv/bin/python" -m chaosemergence.verdict --mode "$mode" "$journal"
