# The dynamic digits detector: the SSD of ssd_ds-mbnet_digits_voc.py with
# the classification gate in its backbone (first block of stage 4, the
# whole 14-sub-network ladder, as configs/ds_mbnet_digits_gate.py), which
# routes every test image to its own sub-network. The gate is the
# classification Stage II one, frozen; the rest is the detection Stage I
# checkpoint given to tools/test.py. Testing reports every static
# sub-network and the routed detector (mAP, mean MAdds per image, routing
# histogram) in one table and report.
_base_ = ['./ssd_ds-mbnet_digits_voc.py']

model = dict(
    type='DSGateDetector',
    # bucket: the batch grouped by routed sub-network, each group sliced
    # ('slice' runs one image at a time: the batch-1 path)
    routing_mode='bucket',
    # the slimming head of the classification Stage II checkpoint (Stage II
    # of configs/ds_mbnet_digits_gate.py, 20 epochs), loaded when the model
    # is built (a test run calls no init_weights) and kept by a detection
    # Stage I checkpoint, which has no slimming head
    gate_checkpoint='work_dirs/ds_mbnet_digits/stage2/epoch_20.pth',
    backbone=dict(gate=dict(stage='stage4', window=(0, 14))))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    # 'level': the image's difficulty, for the routing histogram per level
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'level'))
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# RoutingMetric (registered in mmpretrain's scope) reads each prediction's
# routed sub-network and MAdds
val_evaluator = [
    dict(type='VOCMetric', metric='mAP', eval_mode='11points'),
    dict(type='mmpretrain.RoutingMetric')
]
test_evaluator = val_evaluator
