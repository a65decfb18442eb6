# Detection Stage II on the digits-VOC set: the gate of the dynamic digits
# detector (ssd_ds-mbnet_digits_voc_gate.py) trained by detection SGS from
# the recalibrated detection Stage I supernet (ssd_ds-mbnet_digits_voc.py,
# then tools/calibrate_bn.py), which stays frozen, BN statistics included.
# An image is easy (gate target: the window's narrowest) when the
# narrowest sub-network's detection loss on it is within a margin of the
# widest's, hard (target: the widest) otherwise. The model is the dynamic
# detector's Stage II class, DSSGSDetector (the base's DSGateDetector
# takes no gate_training); see its docstring.
# tools/test.py on the result reports every static sub-network and the
# routed detector (mAP, mean MAdds per image, routing per difficulty level).
_base_ = ['./ssd_ds-mbnet_digits_voc_gate.py']

model = dict(
    type='DSSGSDetector',
    # the slimming head starts from its init, not from a classification gate
    gate_checkpoint=None,
    stage1_checkpoint='work_dirs/ds_det_digits/stage1/calibrated.pth',
    gate_training=dict(
        # absolute: easy when loss_narrow <= loss_wide + 1.5. On the
        # training images the narrowest's loss is a similar multiple of the
        # widest's on every level (the widest fits the training images
        # best), so a relative margin does not separate the levels; the
        # difference grows with the level, and a margin of 1.5 (about the
        # median difference on the clean levels) makes over half of the
        # clean images easy and a fifth of the heaviest (docs/detection.md)
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
