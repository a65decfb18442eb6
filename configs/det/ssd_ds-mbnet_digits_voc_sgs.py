# Detection Stage II on the digits-VOC set: the gate of the dynamic digits
# detector (ssd_ds-mbnet_digits_voc_gate.py) trained by detection SGS from
# the recalibrated detection Stage I supernet (ssd_ds-mbnet_digits_voc.py,
# then tools/calibrate_bn.py), which stays frozen, BN statistics included.
# An image is easy (gate target: the window's narrowest) when the
# narrowest sub-network's detection loss on it is within a margin of the
# widest's, hard (target: the widest) otherwise; see DSGateDetector.
# tools/test.py on the result reports every static sub-network and the
# routed detector (mAP, mean MAdds per image, routing per difficulty level).
_base_ = ['./ssd_ds-mbnet_digits_voc_gate.py']

model = dict(
    # the slimming head starts from its init, not from a classification gate
    gate_checkpoint=None,
    stage1_checkpoint='work_dirs/ds_det_digits/stage1/calibrated.pth',
    gate_training=dict(
        # absolute: easy when loss_narrow <= loss_wide + 1.5. Measured on
        # the training images with the demo's Stage I (seed 0): the
        # narrowest's loss is 1.7-3.4 times the widest's on every level
        # alike (the widest fits the training images best), so no relative
        # margin separates the levels (a margin of 0.5 makes 8-19 % of each
        # level easy); the difference grows with the level (median 1.4 on
        # levels 0-1, 1.7 on level 2, 2.0 on level 3), and 1.5 makes 57 /
        # 57 / 39 / 20 % of levels 0..3 easy
        margin=1.5,
        margin_mode='absolute',
        # easy and hard images weigh the same in the gate loss whatever
        # their share, as the digits classifiers' gates
        class_weight='balanced',
        label_smooth=0.1,
        # no MAdds term: the margin alone sets how many images go wide
        complexity_weight=0.0),
    backbone=dict(init_cfg=None))

# As the classification Stage II: SGD at a high rate without weight decay,
# for the few hundred steps of a CPU demo; only the slimming head learns.
max_epochs = 4
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='SGD', lr=0.5, momentum=0.9, weight_decay=0.0, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-4,
         by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# Statistics come recalibrated from Stage I and stay frozen: no calibration
test_cfg = dict(calibrate=None)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
