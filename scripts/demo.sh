#!/usr/bin/env bash
# The main job against a fresh sandbox, in ./demo-workspace (replaced on every run).
# What it shows grows with the pipeline: today, plant a merchant and pull it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ks="$root/.venv/bin/khaosync"
work="$root/demo-workspace"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

echo "== 1. plant a sandbox merchant (seed 7)"
"$ks" sandbox init --seed 7 --customers 500 --orders 3000

echo
echo "== 2. pull everything Khaos Control holds into the state store"
set +e
"$ks" pull
rc=$?
set -e
echo "(pull exit code $rc: 1 means fail-severity findings, here the planted order totals that do not add up)"

echo
echo "== 3. a day passes; an incremental pull picks up only the changes"
"$ks" sandbox advance --days 1
"$ks" pull || true

echo
echo "== 4. open exceptions by owner"
"$ks" exceptions list --open || true

echo
echo "Workspace: $work (state in .khaosync/state.db, sandbox in .khaosync/sandbox)"
echo "Next stages (map, diff, push, reconcile) arrive with their issues; try: $ks --help"
