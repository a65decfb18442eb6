# DS-MobileNetV1 Stage II on the graded digits (the demo's data, see
# configs/_base_/graded_digits.py): the gate learns to route each image
# within the ladder by SGS, starting from the recalibrated Stage I supernet
# of configs/ds_mbnet_graded_digits.py. Schedule, loops and the rest of the
# gate recipe are the plain digits demo's (configs/ds_mbnet_digits_gate.py)
# except where said; why each value: docs/graded_digits_demo.md, "Stage II".
_base_ = ['./ds_mbnet_digits_gate.py', './_base_/graded_digits.py']

model = dict(
    backbone=dict(
        subnets=_base_.graded_subnets,
        gate=dict(
            # the gate sits where the ladder starts: every group from stage2
            # on is routed (see the ladder's comment)
            stage='stage2',
            # subnet_6..subnet_13 (1.59-5.55 M MAdds): SGS targets only the
            # window's two ends, so its narrowest is what the easy images
            # get; it must be nearly as good as the widest on the clean
            # levels, which the narrower members are not
            window=_base_.graded_window,
            # the slimming head reads the pooled gate input, not the SE's
            # squeeze (DS-Net's): that squeeze has 6 channels here (0.25 of
            # stage1's 24), most of them zero after its ReLU, too little to
            # tell the clean images from the heavy ones
            features='pooled')),
    # images that even the widest gets wrong (many of level 3) are left out
    # of the gate loss instead of pulling the gate wide (docs/gate.md)
    sgs_rule='smallest_widest',
    # from the plain digits demo: sgs_class_weight='balanced' (hard targets
    # are rare, and with the plain mean the gate sends every image narrow)
    # and complexity_weight=0.5 at madds_unit=5e6 (the MAdds term at the
    # models' own scale; without it the gate sends most images wide)
    # written by tools/calibrate_bn.py (tools/run_demo.sh runs it)
    stage1_checkpoint='work_dirs/ds_mbnet_graded_digits/stage1/'
    'calibrated.pth')
train_dataloader = _base_.graded_train_dataloader
val_dataloader = _base_.graded_val_dataloader
test_dataloader = val_dataloader
val_evaluator = [*_base_.graded_evaluator, dict(type='RoutingMetric')]
test_evaluator = val_evaluator

# twice the plain digits' images per epoch: 6 epochs (1,080 steps) instead
# of 20 (460), the same cosine from lr 1.0
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=6, eta_min=1e-5, by_epoch=True,
         begin=0, end=6, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=6, val_interval=6)

# Route to a fixed share of the widest's MAdds: after each epoch the cost
# penalty on the gate logits is fitted on the training images so that they
# spend this share on average (the gate still decides which images go wide;
# the penalty is saved with the checkpoint). Where the squared complexity
# term alone settles depends on the Stage I supernet; the budget fixes it.
# The penalty is fitted on the training images as the test split is seen
# (the test pipeline, no random crop): the gate finds cropped images
# harder, and a penalty fitted on them spends less on the test split. 0.58
# keeps the test split's share under 60 % with room for its sampling error
# (1,440 images: about 0.9 % of share). See docs/gate.md, "Routing to a
# MAdds budget".
custom_hooks = [
    *_base_.custom_hooks,
    dict(
        type='RoutingBudgetHook',
        budget=0.58,
        dataloader=dict(
            batch_size=256,
            num_workers=0,
            dataset=dict(
                **_base_.graded_dataset,
                split='train',
                pipeline=_base_.test_pipeline),
            sampler=dict(type='DefaultSampler', shuffle=False)))
]
