#!/usr/bin/env bash
# Two wsgipool servers side by side, for a difference of a few percent (an option on and
# off, or two source trees). Both run at once with PYTHONHASHSEED=0 and no address
# randomisation (setarch -R), pinned to CPU 0, with wrk pinned to CPU 1; wrk alternates
# between them, round after round, so both see the same moments of a noisy machine.
# Prints the median ratios B / A of req/s and of CPU time per request (from /proc).
#
#   A_ARGS="" B_ARGS="--metrics-bind 127.0.0.1:9101" benchmarks/ab.sh
#   A_SRC=/path/to/old/src B_SRC=src ROUNDS=40 benchmarks/ab.sh
#
# Run it twice with the sides swapped: the position itself can favour one by a few percent.
# Settings (environment): A_SRC, B_SRC (default src), A_ARGS, B_ARGS, APP (hello:app),
# THREADS (16), CONNECTIONS (50), ROUNDS (40), DURATION (2, seconds per run), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
a_src=$(realpath "${A_SRC:-src}"); b_src=$(realpath "${B_SRC:-src}")
app=${APP:-hello:app}; threads=${THREADS:-16}; connections=${CONNECTIONS:-50}
rounds=${ROUNDS:-40}; seconds=${DURATION:-2}; python=${PYTHON:-python3}
port_a=$((20000 + RANDOM % 10000)); port_b=$((port_a + 1))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

start() {  # SRC PORT ARGS...: prints the server's pid
  (cd "$root/benchmarks/apps" && exec taskset -c 0 setarch -R env PYTHONHASHSEED=0 \
    PYTHONPATH="$root/benchmarks/apps:$1" "$python" -m wsgipool "$app" -b "127.0.0.1:$2" \
    -t "$threads" --log-level warning "${@:3}" >/dev/null 2>&1) &
  echo $!
}
ready() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "ab.sh: no server on port $1" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() {  # PID PORT: "req/s cpu_us_per_request"
  local before after out
  before=$(cpu_ticks "$1")
  out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" "http://127.0.0.1:$2/" 2>/dev/null)
  after=$(cpu_ticks "$1")
  awk -v out="$out" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
    n = split(out, lines, "\n")
    for (i = 1; i <= n; i++) {
      split(lines[i], f, " ")
      if (lines[i] ~ /requests in/) requests = f[1]
      if (lines[i] ~ /Requests\/sec/) rate = f[2]
    }
    printf "%s %.2f", rate, ticks / hz / requests * 1e6
  }'
}

# start() execs through taskset, setarch and env, so its pid is the server's.
# shellcheck disable=SC2086  # the ARGS are word lists
pid_a=$(start "$a_src" "$port_a" ${A_ARGS:-}); pids+=("$pid_a")
# shellcheck disable=SC2086
pid_b=$(start "$b_src" "$port_b" ${B_ARGS:-}); pids+=("$pid_b")
ready "$port_a"; ready "$port_b"
for port in "$port_a" "$port_b"; do taskset -c 1 wrk -t1 -c"$connections" -d1s "http://127.0.0.1:$port/" >/dev/null; done
results=$(mktemp)
for round in $(seq "$rounds"); do
  if (( round % 2 )); then a=$(measure "$pid_a" "$port_a"); b=$(measure "$pid_b" "$port_b")
  else b=$(measure "$pid_b" "$port_b"); a=$(measure "$pid_a" "$port_a"); fi
  echo "$a $b" | tee -a "$results"
done
"$python" - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
rate = [b_rate / a_rate for a_rate, _, b_rate, _ in rows]
cpu = [b_cpu / a_cpu for _, a_cpu, _, b_cpu in rows]
def quartiles(values): q = statistics.quantiles(values, n=4); return f"{q[0]:.3f}-{q[2]:.3f}"
print(f"{len(rows)} rounds: B/A req/s median {statistics.median(rate):.3f} (quartiles {quartiles(rate)}); "
      f"CPU per request median {statistics.median(cpu):.3f} (quartiles {quartiles(cpu)})")
PY
rm -f "$results"
