#!/usr/bin/env bash
# The GPU run of issue 24: install what the machine lacks from shipped wheels, check CUDA, run the
# chosen steps within a time budget, each with --device cuda and its own timeout, and write every
# result and log under one folder. Safe on any CUDA machine: it installs nothing system-wide (wheels
# go to a private folder on PYTHONPATH), writes only under $SITE and $OUT, and leaves the GPU's
# settings alone.
#
# Before (on a machine with the package index; see docs/guides/gpu.md):
#   benchmarks/device/fetch_wheels.sh                     # benchmarks/device/wheels/, ~17 MB
#   python benchmarks/device/make_cifar_subset.py         # benchmarks/device/data/cifar10/, ~31 MB
# On the CUDA machine, from the checkout's root:
#   benchmarks/device/run.sh                              # every step, 540 s in all
#   BUDGET=300 STEPS="tests train ipguard" benchmarks/device/run.sh
#
# Environment: OUT (results; default runs/device), BUDGET (seconds for all steps, default 540),
# STEPS (default: tests train ipguard ipguard-speed aruc; also survival: experiments/cifar10-survival.toml, the
# cells SURVIVAL_ONLY names, default --only 'zhang-content x *' --only 'ipguard x *'), PYTHON (default python3), SITE (where the
# wheels go, default /tmp/modelproof-site), DATA (the CIFAR-10 subset's parent folder, default
# benchmarks/device/data), EPOCHS (ResNet-20 training epochs, default 30), DEVICE (default cuda; cpu
# rehearses the run's plumbing on a machine without a GPU).
# Writes: $OUT/summary.json and $OUT/summary.md (each step: exit status, seconds, log), $OUT/logs/*.log,
# and each step's own results (JSON) under $OUT.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/runs/device}
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-"tests train ipguard ipguard-speed aruc"}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/modelproof-site}
DATA=${DATA:-$ROOT/benchmarks/device/data}
EPOCHS=${EPOCHS:-30}
DEVICE=${DEVICE:-cuda}
WHEELS=$ROOT/benchmarks/device/wheels
START=$(date +%s)
mkdir -p "$OUT/logs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" MODELPROOF_DATA="$DATA" \
  MODELPROOF_TEST_DEVICE="$DEVICE"
: > "$OUT/steps.tsv"

log() { echo "[$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/run.log"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
MP=("$PYTHON" -c 'import sys; from modelproof.cli import main; sys.argv[0] = "modelproof"; main()')  # the CLI

# step NAME LIMIT COMMAND...: run COMMAND with the smaller of LIMIT and the budget left, log it, record it.
step() {
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 20 ]; then
    log "skip $name: ${remaining} s of the budget left"
    printf '%s\tskipped\t0\t%s\n' "$name" "logs/$name.log" >> "$OUT/steps.tsv"
    return
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  log "start $name (limit ${limit} s): $*"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  log "end $name: exit $rc after $(( $(date +%s) - t0 )) s$([ $rc -eq 124 ] && echo ' (timed out)')"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "logs/$name.log" >> "$OUT/steps.tsv"
}

# 1. what the machine has; wheels for what it lacks
log "python: $(command -v "$PYTHON") $("$PYTHON" -V 2>&1)"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
else
  echo "no nvidia-smi" > "$OUT/gpu.txt"
fi
log "gpu: $(head -1 "$OUT/gpu.txt")"
missing=$("$PYTHON" - "$WHEELS" <<'EOF'
import importlib.metadata as md, pathlib, re, sys
wanted = {}
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    dist = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    wanted.setdefault(dist, wheel)
have = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() for d in md.distributions()}
print(" ".join(str(w) for d, w in wanted.items() if d == "modelproof" or d not in have))
EOF
)
if [ -n "$missing" ]; then
  log "installing into $SITE: $(for w in $missing; do basename "$w" | cut -d- -f1; done | tr '\n' ' ')"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $missing \
    > "$OUT/logs/install.log" 2>&1 || { log "pip install failed (see logs/install.log)"; exit 3; }
fi
"$PYTHON" - "$DEVICE" > "$OUT/environment.json" 2>"$OUT/logs/environment.log" <<'EOF'
import json, sys, torch, modelproof
ok = torch.cuda.is_available() or sys.argv[1] != "cuda"
print(json.dumps({"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else sys.argv[1], "modelproof": modelproof.__file__}))
raise SystemExit(0 if ok else 4)
EOF
case $? in
  0) log "environment: $(cat "$OUT/environment.json")" ;;
  4) log "torch.cuda.is_available() is False: not a CUDA machine, nothing run"; exit 4 ;;
  *) log "modelproof or torch does not import (logs/environment.log)"; exit 3 ;;
esac
[ -f "$DATA/cifar10/cifar10-train.npz" ] || log "no CIFAR-10 subset in $DATA/cifar10: the CIFAR steps will fail (make_cifar_subset.py)"

# 2. the steps, in the order given
for s in $STEPS; do
  case $s in
    tests)  # every command family on cuda, and the device rule's tests
      step tests 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests/cli/test_cuda.py \
        tests/models/test_devices.py tests/models/test_fake_cuda.py --junitxml="$OUT/tests.xml" ;;
    train)  # ResNet-20 on the CIFAR-10 subset (issue: full CIFAR-10 to >= 0.90 in <= 5 min on the H200)
      step train 150 "${MP[@]}" train --arch resnet20 --dataset cifar10 --data-dir "$DATA/cifar10" --epochs "$EPOCHS" \
        --batch-size 128 --device "$DEVICE" --out "$OUT/resnet20.safetensors" --json ;;
    ipguard)  # the issue's traceback, end to end through the CLI with the reference population
      MODELPROOF_SECRET=device-run step ipguard 150 "${MP[@]}" protect ipguard --model "$OUT/resnet20.safetensors" \
        --data-dir "$DATA/cifar10" --points 100 --k 10 --device "$DEVICE" --out "$OUT/ipguard" --json ;;
    ipguard-speed)  # Table 8: 100 points on ResNet-20, batched and per point, and the baselines
      step ipguard-speed 120 "$PYTHON" benchmarks/ipguard_speed.py --cifar "$DATA/cifar10" --device "$DEVICE" --threads 4 ;;
    aruc)  # Table 4 at CIFAR-10 scale (the subset): IPGuard and its baselines, positives and negatives
      step aruc 400 "$PYTHON" benchmarks/ipguard_aruc.py --datasets cifar10 --data "$DATA" --arch resnet20 \
        --owner 7000 --attacker 3000 --test 1000 --epochs 15 --finetune-epochs 2 --prune-epochs 1 --threads 4 \
        --methods Random FGSM IGSM IPGuard --seeds 3 --other-archs vgg11:1,resnet18:1,mobilenetv2:1,wrn-22-4:1 \
        --forests 2 --cache "$OUT/aruc-cache" --json "$OUT/aruc.json" --device "$DEVICE" ;;
    survival)  # issue 26 on CIFAR-10: the cheapest rows of the survival grid (resumable; the population is built here)
      ONLY=(--only 'zhang-content x *' --only 'ipguard x *')
      [ -n "${SURVIVAL_ONLY:-}" ] && eval "ONLY=($SURVIVAL_ONLY)"
      step survival 500 "${MP[@]}" experiment run experiments/cifar10-survival.toml --out "$OUT/cifar10-survival" \
        --device "$DEVICE" --threads 4 --no-report "${ONLY[@]}" ;;
    *) log "unknown step $s (tests train ipguard ipguard-speed aruc survival)" ;;
  esac
done

# 3. the summary
"$PYTHON" - "$OUT" "$BUDGET" <<'EOF'
import json, pathlib, sys
out, budget = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = [dict(zip(("step", "exit", "seconds", "log"), line.split("\t")))
        for line in (out / "steps.tsv").read_text().splitlines() if line]
env = json.loads((out / "environment.json").read_text())
(out / "summary.json").write_text(json.dumps({"environment": env, "budget_s": budget, "steps": rows}, indent=1) + "\n")
lines = [f"# GPU run on {env['device']} (torch {env['torch']}, CUDA {env['cuda']}), budget {budget} s", "",
         "| step | exit | seconds | log |", "|---|---|---|---|"]
lines += [f"| {r['step']} | {r['exit']} | {r['seconds']} | {r['log']} |" for r in rows]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done in $(( $(date +%s) - START )) s; results in $OUT"
