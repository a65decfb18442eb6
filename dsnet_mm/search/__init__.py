# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Progressive sub-network search for dynamic inference (Yang et al.,
``docs/reference/progressive_search.md``: trainable noise ranking, channel
groups, fine-tuning threshold, sub-network re-selection), producing
non-uniform ``subnets=`` lists for the DS backbones. A library:
``tools/search_subnets.py`` only calls it. Not imported by
``import dsnet_mm`` (nothing here registers into a registry).
"""
from .channels import ChannelAxes, classifier_axes, l1_scores, \
    permute_channels
from .noise import (ChannelNoise, add_channel_noise, channel_alphas,
                    noise_alphas, noise_scores, noisy_scoring, ranking_perms,
                    remove_channel_noise)
from .progressive import ProgressiveSearch, check_search_args
from .reselect import pareto_front, reselect, subnet_list
from .runner import DEFAULTS, SearchRunner, matched_uniform, search_options

__all__ = [
    'ChannelAxes', 'classifier_axes', 'l1_scores', 'permute_channels',
    'ChannelNoise', 'add_channel_noise', 'channel_alphas', 'noise_alphas',
    'noise_scores', 'noisy_scoring', 'ranking_perms', 'remove_channel_noise',
    'ProgressiveSearch', 'check_search_args', 'pareto_front', 'reselect',
    'subnet_list', 'DEFAULTS', 'SearchRunner', 'matched_uniform',
    'search_options'
]
