# Copyright (c) dsnet_mm contributors. All rights reserved.
from .routing_metric import LevelAccuracy, RoutingMetric

__all__ = ['LevelAccuracy', 'RoutingMetric']
