#!/usr/bin/env bash
# Fuzz the agent's parsers of hostile input, each for a bounded time:
#
#   ./scripts/fuzz.sh                  every target, 20 s each (what CI runs)
#   ./scripts/fuzz.sh rules config     some of them
#   EDGE_AGENT_FUZZ_SECONDS=600 ./scripts/fuzz.sh sensor    longer
#   ./scripts/fuzz.sh --merge rules    fold what runs found into the committed
#                                      corpus, minimized (then commit it)
#
# Targets (fuzz/fuzz_targets/, driving edge_agent::fuzz):
#   rules    rule files: YAML load + compile, as `rules check` and the daemon
#   config   agent.toml: parse + validate, reload diff, canonical TOML again
#   control  control-socket lines: split, parse, dispatch, parameter checks
#   fleet    fleet config bundles: envelope, signature, payload, overlay merge
#   sensor   kernel records from the ring buffer: decode + enrich
#
# libFuzzer, coverage-guided, on the pinned stable toolchain: edge-agent and
# the targets are compiled with the SanitizerCoverage flags cargo-fuzz
# passes for `--sanitizer none` (fuzz/sancov-rustc; stable rustc accepts
# them), so neither nightly nor cargo-fuzz is needed, and libfuzzer-sys
# compiles libFuzzer with the C++ compiler from build-essential. Coverage
# guides through the agent's own code; its dependencies (the YAML, TOML and
# JSON parsers included) run uninstrumented, as the dev build made them.
# No AddressSanitizer: that needs nightly, and the code fuzzed here has no
# `unsafe`, so a memory error would be a panic.
#
# Each target starts from fuzz/corpus/TARGET (committed, small) and writes
# what it finds to target/fuzz-runs/corpus/TARGET, never into the repository.
# A panic, a run over 5 s on one input or over 512 MiB of memory is a
# failure: the input is saved under target/fuzz-runs/artifacts/TARGET/, its path
# printed with the command that replays it, and the script exits 1 after
# running the other targets.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(rules config control fleet sensor)
SECONDS_EACH=${EDGE_AGENT_FUZZ_SECONDS:-20}
# libFuzzer's limits for one input: a hang and a runaway allocation are
# findings like a panic is. 512 MiB is far above what any of these parsers
# needs for a 64 KiB input and far below what would take a node down.
RSS_LIMIT_MB=512
TIMEOUT_S=5

die() {
    echo "fuzz.sh: $*" >&2
    exit 1
}

merge=0
if [ "${1:-}" = --merge ]; then
    merge=1
    shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) die "unknown target '$t' (${ALL_TARGETS[*]})" ;; esac
done
case $SECONDS_EACH in '' | *[!0-9]*) die "EDGE_AGENT_FUZZ_SECONDS must be a whole number of seconds" ;; esac

. scripts/toolchain.sh
command -v c++ >/dev/null 2>&1 || die "no C++ compiler to build libFuzzer: sudo apt-get install build-essential"

# Built in the dev profile, so that the dependencies come from the
# workspace's own dev build (scripts/test.sh made it just before in CI):
# fuzz/sancov-rustc instruments and optimises only edge-agent (built with
# its `fuzzing` feature, which keeps that build apart) and the targets.
# --workspace resolves features as test.sh's build did, so the same
# dependency builds serve (all but one YAML crate that a dev-dependency
# gives an extra feature).
# What runs find (corpus), what failed (artifacts) and libFuzzer's logs:
RUNS=target/fuzz-runs
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
printf '\n==> building %s\n' "${targets[*]}"
build_start=$(date +%s)
built=$(mktemp)
trap 'rm -f "$built"' EXIT
rust env RUSTC_WORKSPACE_WRAPPER="$PWD/fuzz/sancov-rustc" CARGO_TERM_COLOR=never \
    cargo build --locked --workspace --features edge-agent-fuzz/libfuzzer "${bins[@]}" \
    --message-format=json-render-diagnostics >"$built"
echo "built in $(($(date +%s) - build_start)) s"

# The executables cargo built, copied aside: target/debug/NAME is also
# where the workspace's own builds put each target's replay program.
bin_of() { echo "$RUNS/bin/$1"; }
rust mkdir -p "$RUNS/bin"
for t in "${targets[@]}"; do
    exe=$(sed -n "s/.*\"name\":\"$t\",\"src_path\".*\"executable\":\"\([^\"]*\)\".*/\1/p" "$built" | tail -n 1)
    [ -x "$exe" ] || die "cargo built no executable for $t (see $built)"
    rust cp "$exe" "$(bin_of "$t")"
done

if [ "$merge" = 1 ]; then
    for t in "${targets[@]}"; do
        found=$RUNS/corpus/$t
        [ -d "$found" ] || die "nothing found for $t yet ($found): run ./scripts/fuzz.sh $t first"
        printf '\n==> merging %s into fuzz/corpus/%s\n' "$found" "$t"
        before=$(find "fuzz/corpus/$t" -type f | wc -l)
        # Edges only (-use_counters=0): hit-count features would keep
        # several times the files for the same code reached.
        rust "$(bin_of "$t")" -merge=1 -use_counters=0 -rss_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S \
            "fuzz/corpus/$t" "$found" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true
        echo "fuzz/corpus/$t: $before -> $(find "fuzz/corpus/$t" -type f | wc -l) files, $(cat "fuzz/corpus/$t"/* | wc -c) bytes"
    done
    exit 0
fi

failed=()
summary=()
for t in "${targets[@]}"; do
    found=$RUNS/corpus/$t
    artifacts=$RUNS/artifacts/$t
    log=$RUNS/logs/$t.log
    rust mkdir -p "$found" "$artifacts" "$(dirname "$log")"
    rust touch "$log.start" # artifacts newer than this are this run's
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
    printf '\n==> fuzzing %s for %s s (corpus fuzz/corpus/%s)\n' "$t" "$SECONDS_EACH" "$t"
    # New inputs go to the first directory; the committed corpus is read only.
    rc=0
    rust "$(bin_of "$t")" "${dict[@]}" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "$found" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-8s ok      %9s execs  %7s exec/s  cov %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
        tail -n 3 "$log"
    else
        failed+=("$t")
        summary+=("$(printf '%-8s FAILED  (exit %s)' "$t" "$rc")")
        # libFuzzer's report: the panic message, the stack, the input.
        grep -v '^#[0-9]' "$log" | tail -n 60
        echo
        echo "fuzz.sh: $t failed; libFuzzer's log: $log"
        while read -r a; do
            echo "  reproducer: $a"
            echo "    replay:   cargo run -p edge-agent-fuzz --bin $t -- $a"
        done < <(find "$artifacts" -type f -newer "$log.start")
    fi
done

printf '\n==> fuzzing summary (%s s each)\n' "$SECONDS_EACH"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
