# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks for deployment (and as the speed limit of slicing),
and gated models as dynamic ONNX models that route each image."""
from .allocator import reuse_freed_memory
from .builder import (build_subnet, input_normalisation, static_gate_parts,
                      static_subnet)
from .dynamic_export import ExportMismatchError, export_dynamic, export_onnx
from .ort_dynamic import OrtDynamicModel
from .static_detector import StaticDetector, detector_output_names
from .static_layers import (StaticLayers, StaticNet, StaticPreGate,
                            fold_conv_bn)
from .static_mbnet import build_mobilenet_v1, static_mobilenet_v1
from .static_resnet import build_resnet, static_resnet
from .static_vit import build_vit

__all__ = [
    'build_subnet', 'static_subnet', 'static_gate_parts',
    'input_normalisation', 'StaticLayers', 'StaticNet', 'StaticPreGate',
    'build_mobilenet_v1', 'fold_conv_bn', 'static_mobilenet_v1',
    'build_resnet', 'static_resnet', 'build_vit', 'reuse_freed_memory',
    'export_dynamic', 'export_onnx', 'ExportMismatchError', 'OrtDynamicModel',
    'StaticDetector', 'detector_output_names'
]
