"""What every inference backend of an exported model provides (ONNX Runtime, TensorRT, ...)."""
import importlib
from types import ModuleType
from typing import Callable, Dict, Iterable, Optional

import mmengine
import numpy as np

from mmeff.utils.timing import time_fn


def import_runtime(module: str, missing: str) -> ModuleType:
    """The runtime's Python package; ``RuntimeError(missing)`` (what to install) without it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RuntimeError(missing) from error


class Backend:
    """A runtime loaded with one exported model; a subclass is one backend.

    A backend says whether this machine can run it (:meth:`require`), makes its file from the ONNX
    export (:meth:`build`; the ONNX file itself unless the runtime compiles it), loads that file
    (``__init__``) and runs it on numpy inputs: :meth:`bind` places the inputs where the runtime
    reads them and returns the call that is timed, :meth:`run` returns the outputs as numpy arrays.

    Args:
        file: the backend's file, from :meth:`build`.
        device: where it runs ('cpu', 'cuda:N').
        num_threads (int, optional): CPU threads of the runtime, where it has its own pool; set it
            to ``torch.get_num_threads()`` to compare with PyTorch on equal terms.
    """
    name: str
    suffix = '.onnx'  # of the file :meth:`build` makes

    def __init__(self, file: str, device: str = 'cpu', num_threads: Optional[int] = None):
        self.file, self.device = file, device

    @classmethod
    def require(cls, device: str = 'cpu', deploy_cfg: Optional[mmengine.Config] = None) -> None:
        """Raise with the reason and the fix when this machine cannot run it on ``device`` (as
        ``deploy_cfg.backend_config`` asks, e.g. at a precision, when given)."""

    @classmethod
    def build(cls, onnx_file: str, deploy_cfg: mmengine.Config, out_file: str, device: str = 'cpu',
              model_cfg: Optional[mmengine.Config] = None) -> str:
        """The backend's file of ``onnx_file`` at ``out_file`` (``deploy_cfg.backend_config`` says how;
        ``model_cfg`` for a build that needs the model's data, e.g. INT8 calibration)."""
        return onnx_file

    def bind(self, inputs: np.ndarray) -> Callable[[], object]:
        """A call without arguments that runs the model on ``inputs`` (N, 3, H, W) float32, already
        placed where the runtime reads them: what a latency measures (input transfer excluded)."""
        raise NotImplementedError

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """The model's outputs for ``inputs`` (N, 3, H, W) float32, by output name, on the CPU."""
        raise NotImplementedError

    def latency(self, inputs: Iterable[np.ndarray], warmup: int, repeats: int) -> Dict[str, float]:
        """:func:`~mmeff.utils.timing.time_fn` of :meth:`bind` on each batch of ``inputs`` (e.g. the
        paper's protocol: preprocessed COCO val images, one a batch), each key averaged over them,
        and ``num_images`` (the number of batches)."""
        per_input = [time_fn(self.bind(x), warmup, repeats, self.device) for x in inputs]
        stats = {key: float(np.mean([t[key] for t in per_input])) for key in per_input[0]}
        return dict(stats, num_images=len(per_input))
