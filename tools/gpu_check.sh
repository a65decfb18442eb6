#!/usr/bin/env bash
# The GPU check: the main job and the tools, briefly, on one CUDA GPU.
#
#   bash tools/gpu_check.sh [--work-dir DIR] [--data-root DIR]
#                           [--time-limit SECONDS]
#   bash tools/gpu_check.sh --dry-run ...   # the same steps on the CPU, tiny
#
# Steps (each a repository tool in a subprocess, driven by tools/gpu_check.py;
# a step whose input a failed step should have made fails without running):
#   data            the graded digits under DATA_ROOT (default data/),
#                   written by tools/dataset_converters/write_digits.py if
#                   missing
#   stage1          Stage I of the main job (configs/ds_mbnet_graded_digits.py)
#                   through tools/dist_train.sh with 1 process, 8 iterations
#                   of 64 images, a checkpoint after each; checked: every loss
#                   finite, CUDA memory used, and the EMA teacher moved: from
#                   iteration 1 (the exact copy of the student and the first
#                   EMA step) to the last its weights changed, and every step
#                   followed t_k = (1 - m) t_(k-1) + m s_k within float32
#                   rounding; a teacher whose update is lost on the device
#                   fails here
#   stage1_amp      the same with --amp
#   calibrate_bn    tools/calibrate_bn.py on the Stage I result
#   stage2          Stage II (configs/ds_mbnet_graded_digits_gate.py) from the
#                   recalibrated supernet, 2 epochs of 4 iterations; checked:
#                   the gate learnt, the frozen rest did not change
#   stage2_amp      the same with --amp
#   test_stage1     tools/test.py on the Stage I result (every sub-network,
#                   BN calibration on the device), the whole test split
#   test_stage2     tools/test.py on the Stage II result (every sub-network
#                   and the dynamic model), the whole test split
#   export_dynamic  tools/export_dynamic.py from the Stage II checkpoint
#                   trained on CUDA (its own check: logits within 1e-4,
#                   routes identical)
#   benchmark_ds_mbnet, benchmark_ds_resnet50
#                   tools/analysis/benchmark.py --device cuda, modes slice,
#                   static and dynamic (--routing-mix, a quarter of each batch
#                   to each of the 4 window members) at 224x224, batch sizes 1
#                   and 32, the smallest and the widest sub-network
# Time: the steps are sized for 3-5 minutes on one GPU; --time-limit (default
# 360 s, 900 for the dry run) bounds the whole check: a step that would start
# later fails unrun.
# The dry run (--dry-run: CPU, 3 + 2x2 iterations of 8 images, 32 test
# images, benchmark at 32x32 with one repeat) takes about 110 CPU-seconds,
# most of them the tools' imports: under 2 minutes on one idle core.
#
# The JSON summary, DIR/gpu_check.json (default work_dirs/gpu_check/), is
# printed at the end; the exit status is 0 only if every step passed:
#   ok              every step passed
#   teacher_moved   the EMA teacher check of every Stage I run passed
#   failed          names of the failed steps
#   device, mode ('cuda' or 'dry-run'), seconds, torch, omp_num_threads
#   steps           one record per step: name, command, ok, seconds,
#                   cpu_seconds, returncode, log (its output), error and
#                   log_tail if it failed, and its numbers:
#                   stage1*: first_loss, last_loss, cuda_memory_mb (peak
#                     logged, CUDA only),
#                     teacher_moved, teacher_relative_change (L2, iteration 1
#                     to the last), teacher_tensors_moved, teacher_steps,
#                     ema_max_error (worst deviation from the EMA step, in
#                     1e-6 of the operands; below 10 passes)
#                   stage2*: losses, gate_tensors_changed, cost_penalty
#                   test_*: subnet_0_top1, largest_top1, dynamic_top1 (few
#                     iterations: low accuracies are expected)
#                   export_dynamic: window, logits_max_diff, routes_identical
#                   benchmark_*: device, ratios per batch size:
#                     slice_over_static per sub-network (1.0 is the limit),
#                     dynamic_throughput_ratio (static network of equal MAdds
#                     / dynamic model), dynamic_over_routed_limit
# The Python is .venv/bin/python if the checkout has it (PYTHON overrides);
# this script sets nothing up (tools/setup_env.sh does) and passes
# OMP_NUM_THREADS through as it finds it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY=$ROOT/.venv/bin/python
else
    PY=python3
fi
exec "$PY" "$ROOT/tools/gpu_check.py" "$@"
