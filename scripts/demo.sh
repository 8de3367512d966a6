#!/usr/bin/env bash
# The main job against a fresh sandbox, in ./demo-workspace (replaced on every run):
# plant a merchant, sync it to the Ometria emulator, let time pass, sync again, then the
# month-end reconciliation, the daily health check and the audit report.
# Exit code 1 from a step means fail-severity findings: the sandbox plants them on purpose.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ks="$root/.venv/bin/khaosync"
work="$root/demo-workspace"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

step() { printf '\n== %s\n' "$1"; }
findings() { local rc=$?; [ $rc -le 1 ] || exit $rc; [ $rc -eq 0 ] || echo "(exit 1: $1)"; }

step "1. plant a sandbox merchant (seed 7): Khaos Control data, Ometria's side, a manifest"
"$ks" sandbox init --seed 7 --customers 500 --orders 3000 --json > manifest.json
"$ks" -q sandbox status | head -16

step "2. sync: pull, map, diff and push everything since the start of the data"
"$ks" sync --since 2026-01-01 --commit || findings "the planted malformed records and penny-out totals are fail-severity exceptions, held back"

step "3. three days pass; the next sync sends exactly the changes"
"$ks" sandbox advance --days 3
"$ks" sync --commit || findings "the same planted exceptions are still open"

step "4. month-end: ERP vs ledger vs Ometria for October"
"$ks" reconcile --month 2026-10 || findings "see the records above"
"$ks" reconcile --month 2026-10 --live || findings "Ometria holds what KC never sold: an earlier integration's per-invoice duplicates and storefront orders, by record and owner"

step "5. the daily health check"
"$ks" health --live || findings "open fail-severity exceptions, grouped by owner above"

step "6. the audit report"
"$ks" report --month 2026-10 --live --mask-pii --html "$work/audit-2026-10.html"

echo
echo "Workspace: $work (state in .khaosync/state.db, sandbox in .khaosync/sandbox)"
echo "Audit report: $work/audit-2026-10.html"
echo "Open exceptions: $ks exceptions list --open   (run it from $work)"
