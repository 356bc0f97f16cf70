#!/usr/bin/env bash
# Run vmwarden's fuzz targets (fuzz/, cargo fuzz + libFuzzer; docs/fuzzing.md).
#   scripts/fuzz.sh [--runs N] [--time SECONDS] [--dev] [TARGET...]
# Every target (or the ones named) runs for N executions (-runs=N, default 10,000,000) or SECONDS
# (-max_total_time), whichever ends first when both are given,
# from a corpus seeded at run time with the real-format inputs of tests/fixtures, the small seeds
# of fuzz/seeds/TARGET and every input that ever crashed it (fuzz/regressions/TARGET, replayed
# first). One line of results per target (executions, seconds, exec/s, peak RSS) is printed and
# appended to $FUZZ_OUT_DIR/results.tsv. Exit 1 when any target crashed, hung, leaked or
# broke a property; its input is left in $FUZZ_OUT_DIR/artifacts/TARGET/.
# cargo fuzz needs nightly rustc flags (-Zsanitizer=address, sancov passes): on the stable
# toolchain they are unlocked with RUSTC_BOOTSTRAP=1, for the fuzz crate's build only.
# --dev builds without optimisation (fuzz/Cargo.toml [profile.dev]): a clean build in about half
# the CPU time of the optimised one (one codegen unit per crate there), the targets run 10-60
# times slower. `make test` uses it for its brief run of every target (docs/fuzzing.md § CI).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=()
build=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) mode+=(-runs="$2"); shift 2 ;;
    --time) mode+=(-max_total_time="$2"); shift 2 ;;
    --dev) build=(--dev); shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    --) shift; break ;;
    -*) echo "fuzz.sh: unknown option $1 (use --runs N or --time SECONDS)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ ${#mode[@]} -gt 0 ] || mode=(-runs=10000000)

export RUSTC_BOOTSTRAP=1
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/vmwarden/target}/fuzz}"
out="${FUZZ_OUT_DIR:-$target_dir/out}"
rss="${FUZZ_RSS_LIMIT_MB:-2048}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is not installed: run scripts/setup.sh (cargo install --locked cargo-fuzz)" >&2
  exit 1
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^vmwarden[-_]fuzz$')
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets <<<"$all"

# Real-format inputs per target (globs under tests/fixtures).
fixtures() {
  local f=tests/fixtures
  case "$1" in
    proc_drbd) echo $f/drbd/proc*.txt $f/real/proc-drbd-*.txt ;;
    drbd_json) echo $f/drbd/json9_*.json ;;
    lvm_fullreport) echo $f/lvm/*fullreport.json $f/real/lvm-fullreport-*.json ;;
    lvmlockctl_info) echo $f/lvm/*lvmlockctl-info*.txt $f/real/lvmlockctl-info-*.txt \
      $f/lock/lvmlockctl-info-*.stdout $f/lock/lvm-lvs-uuid-lockargs.stdout ;;
    sanlock_status) echo $f/sanlock/*status*.txt $f/sanlock/no-daemon.txt \
      $f/real/sanlock-status-*.txt $f/lock/sanlock-status-*.stdout $f/lock/sanlock-capture-*-status.txt ;;
    sanlock_gets) echo $f/sanlock/*gets*.txt $f/real/sanlock-gets-*.txt $f/lock/sanlock-capture-*gets*.txt ;;
    sanlock_renewal) echo $f/sanlock/*renewal.txt ;;
    sanlock_direct_dump) echo $f/lock/sanlock-*.stdout ;;
    domain_xml) echo $f/libvirt/domain-*.xml $f/libvirt/testdriver-node.xml $f/compat/*guest.xml ;;
    libvirt_caps) echo $f/compat/*.domcaps.xml $f/compat/*.capabilities.xml ;;
    virsh_output) echo $f/compat/*.version.txt ;;
    config) echo config/vmwarden.toml ;;
  esac
}

# Build every target (a no-op when nothing changed); the output only when it fails.
mkdir -p "$(dirname "$target_dir")"
if ! cargo fuzz build "${build[@]}" -a --target-dir "$target_dir" >"$target_dir.build.log" 2>&1; then
  tail -30 "$target_dir.build.log" >&2
  echo "fuzz.sh: the fuzz crate does not build: cargo fuzz build ${build[*]} -a --target-dir $target_dir" >&2
  exit 1
fi
mkdir -p "$out"
printf '# %s %s\n' "$(date -u +%FT%TZ)" "${mode[*]}" >>"$out/results.tsv"
failed=()
for t in "${targets[@]}"; do
  corpus="$out/corpus/$t"
  if [ ${#build[@]} -gt 0 ]; then
    # The brief unoptimised run (CI) starts from the seeds alone each time: a corpus kept from run
    # to run would grow, and replaying it (a few exec/s for some targets) would outgrow --time.
    corpus="$out/corpus-dev/$t"
    rm -rf "$corpus"
  fi
  mkdir -p "$corpus" "$out/artifacts/$t"
  for s in $(fixtures "$t") fuzz/seeds/"$t"/* fuzz/regressions/"$t"/*; do
    [ -f "$s" ] && cp -f "$s" "$corpus/seed-$(basename "$s")"
  done
  log="$out/$t.log"
  start=$(date +%s.%N)
  rc=0
  cargo fuzz run "${build[@]}" -a --target-dir "$target_dir" "$t" "$corpus" -- "${mode[@]}" \
    -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -detect_leaks=1 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" >"$log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  secs=$(awk "BEGIN {printf \"%.0f\", $end - $start}")
  verdict=ok
  if [ "$rc" != 0 ]; then
    verdict="FAILED (rc $rc, see $log)"
    failed+=("$t")
  fi
  printf '%s\t%s\t%s s\t%s exec/s\t%s MB\t%s\n' "$t" "${execs:-?}" "$secs" "${eps:-?}" "${peak:-?}" "$verdict" \
    | tee -a "$out/results.tsv"
  if [ "$rc" != 0 ]; then
    # What failed and the input that did it, so that a CI log alone says how to reproduce it.
    grep -E -m 12 "panicked at|^==[0-9]+==ERROR|SUMMARY:|ALARM|out-of-memory|Test unit written to|^Error" "$log" >&2 || tail -20 "$log" >&2
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "fuzz.sh: $t: reproducer $a (replay from the repository: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build[*]} -a --target-dir $target_dir $t $a)" >&2
    done
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]} (inputs in $out/artifacts/, logs in $out/)" >&2
  exit 1
fi
