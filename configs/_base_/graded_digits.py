# The graded digits (dsnet_mm/datasets/graded_digits.py, written by
# tools/setup_env.sh under data/graded_digits): the UCI digits at four
# difficulty levels, 11,496 training and 1,440 test images, train and test
# sharing no source digit. Shared by the graded Stage I and Stage II configs;
# the names are prefixed so that they do not clash with the plain digits
# configs these inherit as well.

# The ladder: the first two groups (stem, stage1: the 16x16 layers, before
# the gate) are shared, every later group widens in 13 even steps, from
# 5/16/4/15 to the widest 44/68/160/288 (stage2..stage5), 0.21-5.55 M
# MAdds. Measured while designing the task (Stage I, 4-6 epochs): with only
# stage4/5 in the ladder (from 56/184) the widest beat the narrowest by 2.6
# points, with stage3-5 by 1.2 (the width of stage2, at 8x8, carries the
# capacity), with stage2 from 18 channels by 4.7. From 5/16/17/28 the gap
# was 5.8-8.5 points over three seeds (the bar of issue 12 is 8); the
# narrow 4x4 stages of the narrowest (stage4 4, stage5 15 channels) make it
# 13.8-16.3, the narrowest falling on the hard levels (43-48 % on level 3,
# the widest 74-78 %) far more than on the clean ones (91-94 % against
# 98-99 %), while subnet_6, where the gate's window starts, changes little
# (stage4/5 76/141 instead of 83/148 channels).
graded_subnets = dict(
    smallest=dict(stem=8, stage1=24, stage2=5, stage3=16, stage4=4,
                  stage5=15),
    widest=dict(stem=8, stage1=24, stage2=44, stage3=68, stage4=160,
                stage5=288),
    num=14)

# the level of each image rides in the data sample's metainfo (sample.level),
# where LevelAccuracy and RoutingMetric read it
graded_dataset = dict(type='GradedDigitsCIFAR10',
                      data_root='data/graded_digits/cifar')
graded_train_dataloader = dict(dataset=graded_dataset)
graded_val_dataloader = dict(dataset=dict(
    **graded_dataset,
    pipeline=[dict(type='PackInputs', meta_keys=('sample_idx', 'level'))]))
graded_evaluator = [dict(type='Accuracy', topk=(1, )),
                    dict(type='LevelAccuracy')]
