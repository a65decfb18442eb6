# The dynamic digits detector: the SSD of ssd_ds-mbnet_digits_voc.py with
# the demo's gate in its backbone (first block of stage2, routing
# subnet_6..subnet_13 on the pooled gate input, as
# configs/ds_mbnet_graded_digits_gate.py), which routes every test image to
# its own sub-network. Here the gate is the classification Stage II one,
# frozen; the rest is the detection Stage I checkpoint given to
# tools/test.py (ssd_ds-mbnet_digits_voc_sgs.py trains the gate on the
# detection losses instead). Testing reports every static sub-network and
# the routed detector (mAP, mean MAdds per image, routing histogram, per
# difficulty level) in one table and report.
_base_ = ['./ssd_ds-mbnet_digits_voc.py']

model = dict(
    type='DSGateDetector',
    # bucket: the batch grouped by routed sub-network, each group sliced
    # ('slice' runs one image at a time: the batch-1 path)
    routing_mode='bucket',
    # the slimming head of the demo's classification Stage II
    # checkpoint (configs/ds_mbnet_graded_digits_gate.py, 6 epochs), loaded
    # when the model is built (a test run calls no init_weights) and kept
    # by a detection Stage I checkpoint, which has no slimming head
    gate_checkpoint='work_dirs/ds_mbnet_graded_digits/stage2/epoch_6.pth',
    backbone=dict(
        gate=dict(stage='stage2', window=(6, 8), features='pooled')))

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
