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

# the gate's window (configs/ds_mbnet_graded_digits_gate.py): its narrow end
# is where the easy images go
graded_window = (6, 8)
# Stage I's student_label_weight (configs/ds_mbnet_graded_digits.py): one
# weight per sub-network. With the teacher alone (the paper) the largest,
# the one width trained on the labels, led subnet_6 by 1.9-2.5 points on the
# clean levels, which the images the gate sends there lose (seed 0: the
# dynamic model 1.46 points below the widest). With the labels for every
# width subnet_6 matched the widest there, but the middle widths rose too:
# the static curve at the dynamic model's MAdds came within 0.2-0.7 points
# of the widest (seed 2: the dynamic model 0.11 below that curve), and the
# narrowest, trained at every step, rose 5 points (seed 1: widest - narrowest
# 7.92). So the labels go where the easy images are routed: the random
# widths up to the window's narrow end; the widths above it and the smallest
# learn from the teacher alone. Three seeds: 0.21-0.97 points below the
# widest, 1.61-2.71 above the static curve, gaps 16.0-20.8 (README, "The
# main job"); with the smallest on the labels too, seed 1's gap was 7.71.
graded_student_label_weight = [0.0] + [1.0] * graded_window[0] + [0.0] * (
    graded_subnets['num'] - graded_window[0] - 1)
