# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Run a dynamic model exported by :func:`~dsnet_mm.deploy.export_dynamic`
with onnxruntime.

Needs only numpy, onnxruntime and the folder the export wrote (the ONNX
files and the manifest ``dynamic.json``): no model code. Each image goes
through the shared part before the gate, is routed as
``DSGateClassifier.route`` routes it, and the batch is grouped by route
(bucketing, as the classifier's ``'bucket'`` path) so that every window
member runs once on its images.
"""
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np

MANIFEST = 'dynamic.json'


def as_numpy(array) -> np.ndarray:
    """``array`` as a numpy array: a torch tensor (on any device, with or
    without gradients) is detached and copied to host memory first, so the
    runtime takes what a torch pipeline on a GPU hands it."""
    if hasattr(array, 'detach') and hasattr(array, 'cpu'):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def ort_session_options(
        intra_op_threads: Optional[int] = None,
        spinning: bool = True) -> 'onnxruntime.SessionOptions':  # noqa: F821
    """onnxruntime session options: ``intra_op_threads`` operator threads
    (None: onnxruntime's choice) that spin-wait for work after a run or not.

    Spinning keeps the threads busy for a while after every run. Where torch
    runs next in the same process (a benchmark alternating the two) they
    take its cores: on 2 cores a torch forward right after an onnxruntime
    run took 3.8x its time at batch size 1.
    """
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '0')
    return options


class OrtDynamicModel:
    """The exported gated classifier on onnxruntime sessions (built once).

    Attributes:
        manifest (dict): The export's manifest.
        window (list[str]): Names of the window's sub-networks, in window
            order (a route is a position in it).
        madds (list[int]): MAdds per image of each window member (the gate's
            slimming head included), at ``input_shape``.
        relative_costs (np.ndarray): ``[window]`` float64: each member's
            MAdds over the widest's.
        cost_penalty (float): The routing's cost penalty.
        input_shape (tuple[int]): ``(C, H, W)`` of an image.
        normalisation (dict): ``mean`` and ``std`` that the images must be
            normalised with, ``(x - mean) / std`` (None: raw images).

    Args:
        out_dir (str): The folder the export wrote.
        providers (Sequence[str]): onnxruntime execution providers.
            Defaults to ``('CPUExecutionProvider', )``.
        intra_op_threads (int, optional): Threads of each session's
            operators. Defaults to None (onnxruntime's choice).
        spinning (bool): Whether those threads spin-wait for work after a
            run (onnxruntime's default: lower latency for back-to-back runs,
            but the spinning threads take the cores from whatever runs next
            in the process; see :func:`ort_session_options`). Defaults to
            True.
    """

    def __init__(self,
                 out_dir: str,
                 providers: Sequence[str] = ('CPUExecutionProvider', ),
                 intra_op_threads: Optional[int] = None,
                 spinning: bool = True) -> None:
        import onnxruntime
        path = osp.join(out_dir, MANIFEST)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} not found: out_dir must be a folder written by '
                'export_dynamic (tools/export_dynamic.py)')
        with open(path) as f:
            self.manifest = json.load(f)
        options = ort_session_options(intra_op_threads, spinning)

        def session(name: str) -> 'onnxruntime.InferenceSession':
            return onnxruntime.InferenceSession(
                osp.join(out_dir, name), options, providers=list(providers))

        members = self.manifest['window']
        self._pre = session(self.manifest['pre_gate'])
        self._post = [session(m['file']) for m in members]
        self.window: List[str] = [m['name'] for m in members]
        self.madds: List[int] = [m['madds'] for m in members]
        self.relative_costs = np.array([m['relative_cost'] for m in members],
                                       dtype=np.float64)
        self.cost_penalty = float(self.manifest['cost_penalty'])
        self.input_shape = tuple(self.manifest['input_shape'])
        self.normalisation = self.manifest['normalisation']

    def pre_gate(self,
                 images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(features after the gate's attention, gate logits ``[N, window]``)
        of normalised images ``[N, C, H, W]``."""
        images = np.ascontiguousarray(as_numpy(images), dtype=np.float32)
        if images.shape[1:] != self.input_shape or not len(images):
            raise ValueError(
                f'images must be [N, {", ".join(map(str, self.input_shape))}]'
                f' with N >= 1 (the exported input shape), got '
                f'{list(images.shape)}')
        features, gate_logits = self._pre.run(None, {'input': images})
        return features, gate_logits

    def route(self, gate_logits: np.ndarray) -> np.ndarray:
        """Each image's window position: ``argmax(gate_logits -
        cost_penalty * relative_costs)`` in float64, as
        ``DSGateClassifier.route``."""
        return (gate_logits.astype(np.float64) -
                self.cost_penalty * self.relative_costs).argmax(-1)

    def __call__(self,
                 images: np.ndarray,
                 routes: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
        """Classify each image with its window member.

        Args:
            images (np.ndarray): Normalised images ``[N, C, H, W]`` (a
                torch tensor on any device is copied to host memory).
            routes (np.ndarray, optional): ``[N]`` window positions to run
                instead of the gate's choice (e.g. a fixed routing mix for
                benchmarking). Defaults to None (the gate routes).

        Returns:
            tuple: class logits ``[N, num_classes]`` and the window position
            each image ran.
        """
        features, gate_logits = self.pre_gate(images)
        if routes is None:
            routes = self.route(gate_logits)
        else:
            routes = self._check_routes(routes, len(features))
        logits = None
        for k in np.unique(routes):
            sel = np.flatnonzero(routes == k)
            out = self._post[k].run(None, {'features': features[sel]})[0]
            if logits is None:
                logits = np.empty((len(routes), out.shape[1]), out.dtype)
            logits[sel] = out
        return logits, routes

    def _check_routes(self, routes, n: int) -> np.ndarray:
        routes = as_numpy(routes)
        if routes.shape != (n, ) or not np.issubdtype(routes.dtype,
                                                      np.integer):
            raise ValueError(
                f'routes must be {n} integer window positions, got shape '
                f'{list(routes.shape)} of {routes.dtype}')
        last = len(self.window) - 1
        if routes.min() < 0 or routes.max() > last:
            raise ValueError(
                f'routes must be window positions in 0..{last} (not '
                f'sub-network indices), got {routes.min()}..{routes.max()}')
        return routes
