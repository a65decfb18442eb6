# DS-ViT Stage I on the graded digits (the demo's data, see
# configs/_base_/graded_digits.py): DS-Net++'s DS-ViT++ with dynamic idle
# slicing (dsnet_mm/models/backbones/ds_vit.py), the sandwich rule and IB,
# without MvCo; configs/ds_vit_graded_digits_mvco.py is the same run with
# MvCo, and tools/run_vit_demo.sh runs both and Stage II. Data, loops,
# hooks and runtime are the DS-MobileNetV1 demo's except where said.
_base_ = ['./ds_mbnet_digits.py', './_base_/graded_digits.py']

# The 'digits' arch: 6 blocks, embedding 64, 4 heads of 16, MLP 128, on the
# 8x8 patches of 4x4 pixels of a 32x32 image (64 tokens and the class
# token). Blocks 0-1 run at full width in every sub-network (they come
# before the gate); blocks 2-5 slim together in 4 steps, embedding
# 16/32/48/64, heads 1-4, MLP 32-128.
vit_subnets = dict(
    smallest=dict(embed=16, heads=1, mlp=32),
    widest=dict(embed=64, heads=4, mlp=128),
    num=4)
# The gate after block 1 reads the class token; Stage I trains its
# attention head (an SE on the tokens) with the supernet, Stage II its
# slimming head, as the CNNs' gated SE.
vit_gate = dict(block=1, window=(0, 4), features='pooled', tokens='cls_token')
vit_backbone = dict(
    type='DSViT', arch='digits', img_size=32, patch_size=4,
    subnets=vit_subnets, fixed_blocks=2, gate=vit_gate, drop_path_rate=0.0)
vit_head = dict(
    type='DSLinearClsHead',
    num_classes=10,
    in_channels=64,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
    topk=(1, ))

model = dict(
    _delete_=True,
    type='DSImageClassifier',
    backbone=vit_backbone,
    head=vit_head,
    bootstrap='ib',
    num_random=2,
    ema_momentum=0.05,
    largest_dropout=0.0)

train_dataloader = _base_.graded_train_dataloader
val_dataloader = _base_.graded_val_dataloader
test_dataloader = val_dataloader
val_evaluator = _base_.graded_evaluator
test_evaluator = val_evaluator

# DeiT's optimizer (AdamW, weight decay 0.05, none on norms, biases, the
# class token and the position embedding) at lr 1e-3 for batch 64
optim_wrapper = dict(
    _delete_=True,
    # frozen parts (the EMA teacher) left out in one log line
    constructor='DSOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=5, eta_min=1e-5, by_epoch=True,
         begin=1, end=6, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=6, val_interval=6)
# layer norms only: nothing to recalibrate
val_cfg = dict(type='SubnetValLoop', subnets='all', calibrate=None)
test_cfg = dict(type='SubnetTestLoop', subnets='all', calibrate=None)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2))
