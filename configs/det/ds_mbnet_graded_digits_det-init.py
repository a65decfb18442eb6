# The classification supernet that initialises the digits detector's
# backbone in the detection demo (tools/run_det_demo.sh): the main job's
# Stage I (configs/ds_mbnet_graded_digits.py: same arch, ladder, sandwich and
# IB) for 2 epochs instead of 4, so that the whole demo fits in 20 minutes
# on 2 cores. The detector then trains every layer on the digits-VOC
# canvases; the main job's 4-epoch checkpoint
# (work_dirs/ds_mbnet_graded_digits/stage1/calibrated.pth, the detection
# configs' default) initialises it as well.
_base_ = ['../ds_mbnet_graded_digits.py']

# one warm-up epoch, then one cosine epoch (360 iterations)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=1, eta_min=1e-4, by_epoch=True,
         begin=1, end=2, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
