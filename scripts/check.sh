#!/usr/bin/env bash
# Every suite auditbus has, in one run: Rust (fmt, clippy, unit tests),
# Python lint and types (ruff, stubtest, mypy), pytest and behave.
# Runs against the installed package; `pip install ".[test]"` comes first.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --all-targets -- -D warnings
# The stable ABI hides part of pyo3's API: code the default build accepts can
# fail to compile with `--features abi3`. A check, not a build: seconds, where
# a second release build would cost minutes.
step "cargo clippy --features abi3"
cargo clippy --all-targets --features abi3 -- -D warnings
step "cargo test"
cargo test --quiet 2>&1 | tee /tmp/auditbus-cargo-test.log
grep -qE "test result: ok\. [1-9][0-9]* passed" /tmp/auditbus-cargo-test.log || { echo "cargo test ran no test"; exit 1; }
step "fuzz the redaction value scanner (bounded: ${AUDITBUS_FUZZ_SECS:-5} s)"
# A filter that matches no test passes with "0 passed": the run must name it exactly, and run it.
AUDITBUS_FUZZ_SECS="${AUDITBUS_FUZZ_SECS:-5}" cargo test --quiet --lib redact::fuzz::fuzz_value_scanner -- --exact 2>&1 \
    | tee /tmp/auditbus-fuzz.log
grep -qE "test result: ok\. 1 passed" /tmp/auditbus-fuzz.log || { echo "the fuzz run ran no test"; exit 1; }

step "ruff"
ruff check python tests features benchmarks
ruff format --check python tests features benchmarks
step "stubtest (stubs match the built module)"
python -m mypy.stubtest auditbus._native --allowlist scripts/stubtest-allowlist.txt
step "mypy (typed public API)"
mypy python/auditbus

step "pytest"
# Exit code 5 means no test was collected: that is a failure here.
python -m pytest -q -p no:cacheprovider
step "behave"
python -m behave --format progress --no-capture features | tee /tmp/auditbus-behave.log
grep -qE "^[1-9][0-9]* scenarios? passed" /tmp/auditbus-behave.log || { echo "behave ran no scenario"; exit 1; }
echo
echo "all suites passed"
