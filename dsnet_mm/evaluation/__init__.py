# Copyright (c) dsnet_mm contributors. All rights reserved.
from .routing_metric import RoutingMetric

__all__ = ['RoutingMetric']
