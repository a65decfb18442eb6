# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks for deployment (and as the speed limit of slicing),
and gated models as dynamic ONNX models that route each image."""
from dsnet_mm.static import (LayerBuilder, StaticLayers, StaticNet,
                             StaticPreGate, fold_conv_bn)
from .allocator import reuse_freed_memory
from .builder import (build_subnet, input_normalisation, static_gate_parts,
                      static_subnet)
from .dynamic_export import ExportMismatchError, export_dynamic, export_onnx
from .ort_dynamic import OrtDynamicModel
from .static_detector import StaticDetector, detector_output_names

__all__ = [
    'build_subnet', 'static_subnet', 'static_gate_parts',
    'input_normalisation', 'LayerBuilder', 'StaticLayers', 'StaticNet',
    'StaticPreGate', 'fold_conv_bn', 'reuse_freed_memory',
    'export_dynamic', 'export_onnx', 'ExportMismatchError', 'OrtDynamicModel',
    'StaticDetector', 'detector_output_names'
]
