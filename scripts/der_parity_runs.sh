#!/usr/bin/env bash
# Full Atari-100k DER-profile runs for docs/results.md, one after the other.
#   scripts/der_parity_runs.sh GAME:SEED [GAME:SEED ...]
# Environment: RESULTS (folder for the MLflow store, outputs and logs; default ./results),
# THREADS (torch threads per run; default: the run's share of the machine, trainer.threads=0),
# EXTRACTOR (default der_cnn; ife for the IFE check), EXTRA (more key=value overrides, for
# example "replay.alpha=0") and TAG (suffix for the run name, for example "uniform").
# Then: python scripts/der_parity.py export --tracking-uri sqlite:///$RESULTS/mlflow.db NAME...
set -u
ife=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/ife
results=$(realpath -m "${RESULTS:-results}")
extractor=${EXTRACTOR:-der_cnn}
mkdir -p "$results/logs"
cd "$results" || exit 1
for spec in "$@"; do
  game=${spec%:*}
  seed=${spec#*:}
  name=der_${game}_s${seed}
  [ "$extractor" = der_cnn ] || name=${extractor}_der_${game}_s${seed}
  [ -z "${TAG:-}" ] || name=${name}_${TAG}
  echo "$(date -u +%FT%TZ) start $name" >> queue.log
  "$ife" train agent=rainbow_der env=atari100k \
    model.extractor="$extractor" env.game="$game" train.total_steps=100000 seed="$seed" \
    tracking.uri="sqlite:///$results/mlflow.db" tracking.eval_episodes=30 \
    tracking.run_name="$name" trainer.progress_bar=false trainer.threads="${THREADS:-0}" \
    ${EXTRA:-} > "logs/$name.log" 2>&1
  rc=$?  # (read before the date substitution below resets $?)
  echo "$(date -u +%FT%TZ) end $name rc=$rc" >> queue.log
done
