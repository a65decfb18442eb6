# Copyright (c) dsnet_mm contributors. All rights reserved.
"""An epoch-based train loop that resumes exactly from any iteration."""
from itertools import islice
from typing import Iterator, List

import torch
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS
from torch.utils.data import DataLoader

# message hub key: the epoch whose validation ran last (saved with every
# checkpoint, so a resumed run knows whether its checkpoint predates it)
VAL_EPOCH_KEY = 'val_epoch'


def loader_over(loader: DataLoader, batches: List[List[int]]) -> DataLoader:
    """A dataloader like ``loader`` (dataset, workers, collation, pinning)
    that yields only ``batches``, given as lists of dataset indices."""
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes mid-epoch and mid-validation as
    if the run had never stopped.

    mmengine's loop restarts the resumed epoch from its first batch, so a
    run resumed from an iteration checkpoint (``CheckpointHook(by_epoch=
    False)``) trains the epoch's first batches twice and ends one partial
    epoch further than an uninterrupted run. This loop instead skips the
    batches the checkpoint has trained: it draws the epoch's batch order
    from the batch sampler (indices only, no data is loaded) and iterates a
    dataloader over the remaining batches, with their indices within the
    epoch. The global random generators are left as the checkpoint saved
    them (see :class:`RandomStateHook`): the epoch's dataloader drew its
    seed when the epoch began, before the checkpoint.

    A checkpoint written at the end of an epoch holds the model before that
    epoch's validation, and validation changes the model (Stage I
    recalibrates the BN statistics of every sub-network) and the random
    generators. So a run resumed from it validates first, as the stopped
    run did after writing it, unless the checkpoint was written after the
    validation had begun (``save_best``).

    The skipped batches are the same only if the batch order depends on
    the seed and the epoch alone, as with mmengine's ``DefaultSampler``.
    Arguments are those of ``EpochBasedTrainLoop``.
    """

    def run(self) -> torch.nn.Module:
        self.runner.call_hook('before_train')
        self._decide_current_val_interval()
        if self._at_epoch_end() and self._validation_due() and \
                self.runner.message_hub.get_info(VAL_EPOCH_KEY) != \
                self._epoch:
            self._validate()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self._validation_due():
                self._validate()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._trained_batches()
        batches = self.dataloader if done == 0 else self._remaining(done)
        for idx, data_batch in enumerate(batches, done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _at_epoch_end(self) -> bool:
        return self._epoch > 0 and \
            self._iter == self._epoch * len(self.dataloader)

    def _validation_due(self) -> bool:
        return (self.runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0
                     or self._epoch == self._max_epochs))

    def _validate(self) -> None:
        # before the loop runs: a checkpoint written during validation
        # (save_best) already holds the validated model
        self.runner.message_hub.update_info(VAL_EPOCH_KEY, self._epoch)
        self.runner.val_loop.run()

    def _trained_batches(self) -> int:
        """Batches of the current epoch that the resumed checkpoint trained
        (0 unless it was written mid-epoch)."""
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if not 0 <= done <= per_epoch:
            raise ValueError(
                f'the resumed checkpoint was written at iteration '
                f'{self._iter} in epoch {self._epoch + 1}, but an epoch now '
                f'has {per_epoch} batches: resume with the '
                'train_dataloader (dataset, batch_size) it was trained with')
        return done

    def _remaining(self, done: int) -> Iterator:
        """The current epoch's batches after the first ``done``."""
        loader = self.dataloader
        if loader.batch_sampler is None:
            raise ValueError('resuming mid-epoch needs a train_dataloader '
                             'with a batch_size (a batch sampler)')
        self.runner.logger.info(
            f'skipping the {done} batches of epoch {self._epoch + 1} that '
            'the resumed checkpoint has trained')
        # neither listing the batches nor starting the loader may draw
        # from the generators restored from the checkpoint
        with torch.random.fork_rng(devices=[]):
            rest = list(islice(loader.batch_sampler, done, None))
            return iter(loader_over(loader, rest))
