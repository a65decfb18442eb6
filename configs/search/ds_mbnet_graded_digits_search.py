# Progressive sub-network search (docs/search.md) over the
# DS-MobileNetV1 of the demo on the graded digits
# (configs/ds_mbnet_graded_digits.py): the search space is the uniform
# ladder's, stage2..stage5 from their widest 44/68/160/288 down to an eighth
# (6/9/20/36), stem and stage1 fixed at 8/24 as in the ladder (they run
# before the gate). tools/run_search_demo.sh runs it.
_base_ = ['../ds_mbnet_graded_digits.py']

search = dict(
    # trained noise scales rank the channels; large noise is removed first
    ranking='noise',
    noise_order='descending',
    # as the paper: each layer's channels ranked by its own noise scales
    # (a stage's blocks produce unrelated channels), and the noise kept on
    # while candidates are scored and fine-tuned
    ranking_scope='layer',
    keep_noise=True,
    # base training of the widest network (with the noise): 3 epochs of the
    # training images left after the held-out part
    base_epochs=3,
    base_lr=0.1,
    base_weight_decay=1e-4,
    # G = 8 channel groups per width group, down to 1/8 of each
    groups=8,
    min_ratio=0.125,
    # scored on 2,000 training images (never the test split) by their
    # cross-entropy, which separates candidates that top-1 at 90-97 %
    # leaves a handful of images apart
    held_out=2000,
    # fine-tune (at most 60 steps, checked every 20) when held-out top-1
    # falls below 70 %
    threshold=70.0,
    finetune_iters=60,
    finetune_lr=0.01,
    check_interval=20,
    criterion='loss',
    # the paper's step: the best candidate ('cost': the smallest loss rise
    # per MAdd saved)
    step_rule='best',
    # as many sub-networks as the uniform ladder
    num_keep=14,
    # Stage I over the 14 re-selected points ('trajectory': the whole
    # filtered trajectory, as the paper's Stage I samples)
    stage1_list='kept',
    # the US-Net baseline's widths in multiples of 4 (US-Net rounds
    # MobileNet widths to 8): each width is a new conv shape, and on CPU a
    # new shape is a new oneDNN kernel, so free widths make the baseline's
    # Stage I much slower than the searched list's
    divisor=4,
    seed=0)
