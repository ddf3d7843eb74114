"""ONNX Runtime inference and latency of an exported model (the benchmark's onnxruntime backend)."""
from typing import Dict, Optional, Sequence, Union

import numpy as np

from mmeff.benchmark.timing import time_fn


def create_session(onnx_file: Union[str, bytes], num_threads: Optional[int] = None):
    """A CPU ONNX Runtime session with every graph optimization (constant folding, node fusions).

    Args:
        onnx_file: path of the ONNX model, or the serialized model.
        num_threads (int, optional): Intra-op threads; ONNX Runtime's default (one per core)
            when None. Set it equal to ``torch.get_num_threads()`` for a fair comparison.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])


def run_session(session, inputs: np.ndarray) -> Dict[str, np.ndarray]:
    """Run ``session`` on one float32 input batch; returns its outputs by name."""
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(inputs, dtype=np.float32)}
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def onnxruntime_latency(onnx_file: str,
                        input_shape: Sequence[int] = (1, 3, 640, 640),
                        warmup: int = 5,
                        repeats: int = 20,
                        num_threads: Optional[int] = None,
                        seed: int = 0) -> Dict[str, float]:
    """Seconds per ONNX Runtime forward of ``onnx_file`` on a random input of ``input_shape``.

    Same protocol and result keys as :func:`mmeff.benchmark.timing.time_fn` (``median``, ``q1``,
    ``q3``, ``iqr``, ``min``, ``mean``, ``warmup``, ``repeats``); session creation and input
    generation are excluded.
    """
    session = create_session(onnx_file, num_threads)
    inputs = np.random.default_rng(seed).random(input_shape, dtype=np.float32)
    feed = {session.get_inputs()[0].name: inputs}
    return time_fn(lambda: session.run(None, feed), warmup, repeats)
