# The ImageNet search recipe of the progressive search paper's code
# (docs/reference/progressive_search.md): G = 8, every searched group down to
# 25 %, a 10k held-out split drawn from *train*, fine-tuning threshold 40 %,
# one epoch of fine-tuning at most. The search runs in one process: start it
# from a trained network (--load-from) so that base training only has to learn
# the noise scales (the paper trains 30 epochs from scratch, SGD lr 0.05 at
# batch 256, cosine, wd 4e-5).
search = dict(
    ranking='noise',
    noise_order='descending',
    base_epochs=1,
    base_lr=0.0125,  # 0.05 * 64 / 256
    base_weight_decay=4e-5,
    groups=8,
    min_ratio=0.25,
    held_out=10000,
    threshold=40.0,
    # one epoch of the 1.27M training images left, at batch 64
    finetune_iters=19858,
    finetune_lr=0.01,
    check_interval=2000,
    criterion='accuracy',
    num_keep=14,
    divisor=8,
    seed=0)
