# Copyright (c) dsnet_mm contributors. All rights reserved.
from .routing_metric import (LevelAccuracy, RoutedImages, RoutingMetric,
                             RoutingResult)

__all__ = ['LevelAccuracy', 'RoutedImages', 'RoutingMetric', 'RoutingResult']
