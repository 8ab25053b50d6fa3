#!/usr/bin/env bash
# The real-film defaults study of docs/results.md ("Real films", 0.3.0): every candidate configuration trained
# with three seeds on the patient-level split of the NIH 64x64 development films, scored on the validation split only.
#   bash benchmarks/real_film_grid.sh [WORK_DIR] [WORKERS]
# DATA (default ../shared/data/nih_cxr14_dev64) and PYTHON (default python) may be set in the environment.
# About 45 minutes on one H100/H200 with 10 workers is not needed: it took minutes there; on 2 CPU cores expect
# about 10 minutes per job (63 jobs), so run a subset there (--config lines below) or pass fewer seeds.
set -euo pipefail
work_dir=${1:-runs/real_film_grid}
workers=${2:-1}
data=${DATA:-../shared/data/nih_cxr14_dev64}
python=${PYTHON:-python}
configs=()
config() { configs+=(--config "$1=$2"); }
for mode in spatial pooled none; do
    for intensity in fixed percentile histogram; do
        config "${mode}_${intensity}" "{\"ieca_mode\": \"$mode\", \"intensity_mode\": \"$intensity\"}"
    done
done
for mode in spatial none; do
    for intensity in fixed percentile; do
        config "${mode}_${intensity}_lr3e-4" "{\"ieca_mode\": \"$mode\", \"intensity_mode\": \"$intensity\", \"learning_rate\": 0.0003}"
        config "${mode}_${intensity}_100ep" "{\"ieca_mode\": \"$mode\", \"intensity_mode\": \"$intensity\", \"max_epochs\": 100}"
        config "${mode}_${intensity}_ema" "{\"ieca_mode\": \"$mode\", \"intensity_mode\": \"$intensity\", \"use_ema\": true}"
    done
done
exec "$python" -m monai_diff3m.experiments.defaults_study --dataset-csv "$data/labels.csv" --image-root "$data" --work-dir "$work_dir" \
    --workers "$workers" --seeds 0 1 2 --set '{"max_epochs": 40, "ehr_groups": ["demographics"], "val_interval": 10}' \
    --schedules stochastic:25:5 stochastic:50:5 stochastic:100:5 stochastic:200:5 stochastic:300:5 stochastic:400:5 \
                stochastic:100:10 stochastic:200:10 ddim_inversion:100:10 ddim_inversion:200:10 \
    "${configs[@]}"
