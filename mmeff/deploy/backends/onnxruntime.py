"""ONNX Runtime on the CPU: the exported ONNX graph as it is, with every graph optimization."""
from typing import Callable, Dict, Optional, Union

import mmengine
import numpy as np

from .base import Backend, import_runtime


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


class ONNXRuntime(Backend):
    """An ONNX graph in a :func:`create_session` session."""
    name = 'onnxruntime'

    @classmethod
    def require(cls, device: str = 'cpu', deploy_cfg: Optional[mmengine.Config] = None) -> None:
        import_runtime('onnxruntime', 'ONNX Runtime is not installed: install the deploy extra '
                       '(pip install -e .[deploy])')
        if device != 'cpu':
            raise ValueError(f'the onnxruntime backend runs on the CPU here; got --device {device}')

    def __init__(self, file: str, device: str = 'cpu', num_threads: Optional[int] = None):
        super().__init__(file, device, num_threads)
        self.session = create_session(file, num_threads)
        self.output_names = [output.name for output in self.session.get_outputs()]

    def bind(self, inputs: np.ndarray) -> Callable[[], object]:
        feed = {self.session.get_inputs()[0].name: np.ascontiguousarray(inputs, dtype=np.float32)}
        return lambda: self.session.run(self.output_names, feed)

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.bind(inputs)()))
