# The graded digits (dsnet_mm/datasets/graded_digits.py, written by
# tools/setup_env.sh under data/graded_digits): the UCI digits at four
# difficulty levels, 5,748 training and 1,440 test images, train and test
# sharing no source digit. Shared by the graded Stage I and Stage II configs;
# the names are prefixed so that they do not clash with the plain digits
# configs these inherit as well.

graded_subnets = dict(
    smallest=dict(stem=8, stage1=24, stage2=18, stage3=16, stage4=17,
                  stage5=28),
    widest=dict(stem=8, stage1=24, stage2=44, stage3=68, stage4=160,
                stage5=288),
    num=14)
graded_gate = dict(stage='stage2', window=(0, 14))

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
