# Stage I supernet recipe of the DS-Net reference release (its
# configs/mobilenetv1_bn_uniform.yml with timm 0.3.2's defaults;
# docs/reference/dsnet.md, "Recipes of the reference release").
# SGD Nesterov, lr 0.08 at batch 512 (8 GPUs x 64), weight decay 1e-4 with
# none on norms and biases (timm's create_optimizer skips 1-D params).
optim_wrapper = dict(
    # frozen parts (the EMA teacher) left out in one log line
    constructor='DSOptimWrapperConstructor',
    optimizer=dict(
        type='SGD', lr=0.08, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))

# 5 warm-up epochs from 1e-5, cosine to 1e-5 until epoch 150, then timm's
# 10 cool-down epochs at the minimum lr: 160 epochs run in total.
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-5 / 0.08,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=145,
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=150,
        convert_to_iter_based=True),
]
# epoch-based; resumes exactly from iteration checkpoints too
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=160, val_interval=1)
# The reference evaluates smallest and largest every epoch, all 14 at the end,
# on the model and on its EMA teacher (whose numbers it reports); statistics
# are recalibrated per sub-network before it is evaluated (the teacher's are
# put back afterwards, so that its targets do not change).
val_cfg = dict(
    type='SubnetValLoop',
    subnets=['smallest', 'subnet_13', 'largest'],
    calibrate=dict(num_batches=200),
    ema=True)
test_cfg = dict(type='SubnetTestLoop', subnets='all',
                calibrate=dict(num_batches=1000))
auto_scale_lr = dict(base_batch_size=512)
