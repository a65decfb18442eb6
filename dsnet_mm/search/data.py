# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The search's data: a held-out part of the *training* split and the rest.

The test split is never read: candidates are scored on ``num_held_out``
training images (drawn by a seeded permutation, loaded with the test
pipeline), and base training and fine-tuning use the remaining ones (train
pipeline). Both come from the config's ``train_dataloader``, through
mmengine's ``indices`` subset of a dataset.
"""
import copy
import random
from typing import Callable, Iterator, List, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS
from torch.utils.data import DataLoader

from dsnet_mm.ops.utils import check_int


def split_indices(num_images: int, num_held_out: int,
                  seed: int) -> Tuple[List[int], List[int]]:
    """(training indices, held-out indices), both sorted, disjoint."""
    check_int('held_out', num_held_out, 1)
    if num_held_out >= num_images:
        raise ValueError(
            f'held_out={num_held_out} must be smaller than the training '
            f'split ({num_images} images): the rest trains the network')
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_images, generator=g).tolist()
    return sorted(order[num_held_out:]), sorted(order[:num_held_out])


class SeededLoader:
    """A dataloader whose random transforms repeat with its seed.

    With workers, mmengine's ``worker_init_fn`` seeds each worker from the
    seed; without, the transforms draw from the main process's ``random``
    and numpy generators, which are seeded here when an epoch starts.
    """

    def __init__(self, loader: DataLoader, seed: int) -> None:
        self.loader = loader
        self.seed = seed

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        if self.loader.num_workers == 0:
            random.seed(self.seed)
            np.random.seed(self.seed % 2**32)
        return iter(self.loader)


def _loader(dataloader: dict, indices: List[int], seed: int,
            pipeline=None) -> SeededLoader:
    loader = copy.deepcopy(dataloader)
    loader['dataset'] = dict(loader['dataset'], indices=indices)
    if pipeline is not None:
        loader['dataset']['pipeline'] = pipeline
    loader['persistent_workers'] = False
    return SeededLoader(Runner.build_dataloader(loader, seed=seed), seed)


def search_data(cfg: Config, num_held_out: int, seed: int
                ) -> Tuple[Callable[[int], SeededLoader], List[dict], int]:
    """The search's training batches and held-out batches.

    Args:
        cfg (Config): A classification config (its ``train_dataloader``,
            and the pipeline of its ``val_dataloader`` for the held-out
            images).
        num_held_out (int): Training images held out for scoring.
        seed (int): Seeds the split.

    Returns:
        tuple: ``train_batches(seed)`` (one epoch of the rest, in the order
        of ``seed``), the held-out batches (a list, loaded once) and the
        number of training images left.
    """
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    train_idx, held_idx = split_indices(len(dataset), num_held_out, seed)
    pipeline = cfg.val_dataloader.dataset.get('pipeline')
    val_loader = dict(cfg.val_dataloader, dataset=cfg.train_dataloader.dataset)
    held_out = list(_loader(val_loader, held_idx, seed, pipeline))

    def train_batches(order_seed: int) -> SeededLoader:
        return _loader(cfg.train_dataloader, train_idx, order_seed)

    return train_batches, held_out, len(train_idx)
