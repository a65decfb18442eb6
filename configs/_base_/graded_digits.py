# The graded digits (dsnet_mm/datasets/graded_digits.py, written by
# tools/setup_env.sh under data/graded_digits): the UCI digits at four
# difficulty levels, 11,496 training and 1,440 test images, train and test
# sharing no source digit. Shared by the graded Stage I and Stage II configs;
# the names are prefixed so that they do not clash with the plain digits
# configs these inherit as well.

# The ladder: the first two groups (stem, stage1: the 16x16 layers, before
# the gate) are shared, every later group widens in 13 even steps, from
# 5/16/4/15 to the widest 44/68/160/288 (stage2..stage5), 0.21-5.55 M
# MAdds. stage2 starts the ladder because the 8x8 stages carry the
# capacity on 8x8 digits (a ladder of the last stages alone gives
# sub-networks of nearly equal accuracy: nothing for a gate to trade). The
# narrow 4x4 stages of the narrowest (stage4 4, stage5 15 channels) make it
# fall far behind on the hard levels while it stays close on the clean
# ones, the spread a gate can exploit; the window's members (from subnet_6)
# are hardly affected. See docs/graded_digits_demo.md, "The ladder".
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
# weight per sub-network. With the teacher alone (DS-Net's IB) the largest,
# the one width trained on the labels, leads subnet_6 on the clean levels,
# and the easy images the gate sends to subnet_6 lose that lead. Labels for
# every width close it but lift the middle of the ladder and the narrowest
# too, which flattens the ladder the gate trades along. So the labels go
# where the easy images are routed: the random widths up to the window's
# narrow end; the widths above it and the smallest learn from the teacher
# alone. See docs/graded_digits_demo.md, "Stage I", and the measured
# weights in docs/results.md, "Stage I label weight".
graded_student_label_weight = [0.0] + [1.0] * graded_window[0] + [0.0] * (
    graded_subnets['num'] - graded_window[0] - 1)
