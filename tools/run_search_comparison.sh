#!/usr/bin/env bash
# The paired comparison of sub-network lists (docs/search.md): for every
# seed in SEEDS, the search of CONFIG with that seed (when an arm needs the
# searched list), one Stage I config per arm
# (tools/analysis/compare_search.py prepare: one recipe, one label-loss
# rule, no largest among the random draws, BN recalibrated on
# CALIB_BATCHES batches), the training of every arm with that seed, and at
# the end the report over all seeds (per-seed gaps against BASELINE, their
# mean with a 95 % confidence interval, the plot).
# Resumable: a finished search or training is not run again.
#
#   SEEDS="0 1 2" bash tools/run_search_comparison.sh
#   # the headroom check: a hand-made list against the uniform list matched
#   # to its MAdds
#   ARMS="hand=configs/search/graded_digits_headroom.json uniform" \
#       BASELINE=uniform WORK_DIR=work_dirs/headroom \
#       bash tools/run_search_comparison.sh
#
# Settings (environment): SEEDS, ARMS (searched uniform usnet | NAME=FILE),
# BASELINE (usnet), CONFIG (the demo's search config), WORK_DIR,
# LABEL_WEIGHT (0), CALIB_BATCHES (40), SEARCH_ARGS (extra options of
# tools/search_subnets.py), TRAIN_ARGS (extra --cfg-options of every
# training, e.g. a shorter schedule).
source "$(dirname "$0")/demo_env.sh"
SEEDS=${SEEDS:-"0 1 2"}
ARMS=${ARMS:-"searched uniform usnet"}
BASELINE=${BASELINE:-usnet}
CONFIG=${CONFIG:-configs/search/ds_mbnet_graded_digits_search.py}
WORK_DIR=${WORK_DIR:-work_dirs/search_comparison}
LABEL_WEIGHT=${LABEL_WEIGHT:-0}
CALIB_BATCHES=${CALIB_BATCHES:-40}
SEARCH_ARGS=${SEARCH_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}

read -r -a arm_specs <<< "$ARMS"
read -r -a seeds <<< "$SEEDS"
names=()
for spec in "${arm_specs[@]}"; do names+=("${spec%%=*}"); done
needs_search=0
for name in "${names[@]}"; do [ "$name" = searched ] && needs_search=1; done
# bad arms (no baseline, unknown names, unreadable lists) fail here,
# before any work
$PY tools/analysis/compare_search.py check --arms "${arm_specs[@]}" \
    --baseline "$BASELINE"

total=$(( ${#seeds[@]} * (${#names[@]} + needs_search) ))
done_jobs=0
begin=$(date +%s)
progress() {
    done_jobs=$((done_jobs + 1))
    echo "== [$done_jobs/$total] $1 ($(( $(date +%s) - begin ))s elapsed) =="
}
for seed in "${seeds[@]}"; do
    dir="$WORK_DIR/seed$seed"
    search_opt=()
    if [ "$needs_search" = 1 ]; then
        progress "seed $seed: search"
        # shellcheck disable=SC2086
        $PY tools/search_subnets.py "$CONFIG" --work-dir "$dir/search" \
            --seed "$seed" $SEARCH_ARGS
        search_opt=(--search-dir "$dir/search")
    fi
    $PY tools/analysis/compare_search.py prepare "$CONFIG" \
        --out "$dir/configs" --arms "${arm_specs[@]}" \
        --baseline "$BASELINE" --label-weight "$LABEL_WEIGHT" \
        --calib-batches "$CALIB_BATCHES" "${search_opt[@]}"
    for name in "${names[@]}"; do
        progress "seed $seed: Stage I of $name"
        if [ -f "$dir/$name/subnet_results.json" ]; then
            echo "done before: $dir/$name/subnet_results.json"
            continue
        fi
        # shellcheck disable=SC2086
        $PY tools/train.py "$dir/configs/$name.py" --work-dir "$dir/$name" \
            --cfg-options "randomness.seed=$seed" $TRAIN_ARGS
    done
done
echo "== report =="
$PY tools/analysis/compare_search.py report "$WORK_DIR" --seeds "${seeds[@]}" \
    --arms "${arm_specs[@]}" --baseline "$BASELINE" \
    --title "Sub-network lists on the graded digits, seeds ${seeds[*]}"
echo "Report: $WORK_DIR/report/comparison.md, $WORK_DIR/report/comparison.png" \
    "($(( $(date +%s) - begin ))s)"
