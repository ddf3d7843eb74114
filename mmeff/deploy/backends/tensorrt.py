"""TensorRT engines from the ONNX export (GPU machines with TensorRT only).

The RT-DETR paper's protocol (Sec. 5.1): TensorRT FP16 on a T4, batch 1, 640x640, latency
averaged over COCO val images, pre-processing and I/O excluded. The engine comes from mmdeploy's
``onnx2tensorrt`` with the deploy config's ``backend_config`` (fp16_mode, workspace, shapes); the
ONNX graph uses only standard ops (GridSample is native in TensorRT >= 8.5), so no mmdeploy
plugin is needed. An engine is checked, not only timed: :func:`mmeff.deploy.compare.
detection_parity` with the FP16 bounds below.
"""
import os.path as osp
from typing import Callable, Dict, Optional

import mmengine
import numpy as np

from .base import Backend, import_runtime

MIN_TENSORRT = '8.5'  # first release with a native GridSample layer
# FP16 engine vs FP32 PyTorch, RT-DETR at 640x640. Not measured (no GPU where this was written):
# FP16's resolution of a normalized coordinate is ~5e-4 (0.3 px at 640) and of a score near 0.8
# ~5e-4; these bounds leave room for its accumulation through the network. Calibrate on a GPU.
FP16_BOX_TOLERANCE = 2.0  # px
FP16_SCORE_TOLERANCE = 1e-2


class TensorRT(Backend):
    """A TensorRT engine (mmdeploy's ``TRTWrapper``), built with ``deploy_cfg.backend_config``
    (e.g. configs/deploy/detection_tensorrt-fp16_static-640x640.py: FP16, 1x3x640x640)."""
    name = 'tensorrt'
    suffix = '.engine'

    @classmethod
    def require(cls, device: str = 'cuda:0', deploy_cfg: Optional[mmengine.Config] = None) -> None:
        import torch
        tensorrt = import_runtime('tensorrt', 'TensorRT is not installed: the tensorrt path needs an NVIDIA GPU '
                                  f'and pip install tensorrt (>= {MIN_TENSORRT}).')
        from mmengine.utils import digit_version
        if digit_version(tensorrt.__version__) < digit_version(MIN_TENSORRT):
            raise RuntimeError(f'TensorRT {tensorrt.__version__} has no GridSample layer: install '
                               f'tensorrt >= {MIN_TENSORRT}.')
        if not torch.cuda.is_available():
            raise RuntimeError('TensorRT needs a CUDA GPU; torch sees none on this machine.')

    @classmethod
    def build(cls, onnx_file: str, deploy_cfg: mmengine.Config, out_file: str, device: str = 'cuda:0',
              model_cfg: Optional[mmengine.Config] = None) -> str:
        cls.require(device)
        from mmdeploy.backend.tensorrt.onnx2tensorrt import onnx2tensorrt
        work_dir, save_file = osp.split(osp.abspath(out_file))
        mmengine.mkdir_or_exist(work_dir)
        onnx2tensorrt(work_dir, save_file, 0, deploy_cfg, onnx_file, device=device)
        return out_file

    def __init__(self, file: str, device: str = 'cuda:0', num_threads: Optional[int] = None):
        self.require(device)
        super().__init__(file, device, num_threads)
        import torch
        from mmdeploy.backend.tensorrt import TRTWrapper
        self.engine = TRTWrapper(file, device_id=torch.device(device).index or 0)

    def bind(self, inputs: np.ndarray) -> Callable[[], object]:
        import torch
        feed = dict(input=torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device))
        return torch.no_grad()(lambda: self.engine(feed))

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """One image at a time (the deploy configs' engines are static at batch 1), concatenated
        along the batch axis."""
        per_image = [{name: out.cpu().numpy() for name, out in self.bind(image[None])().items()}
                     for image in np.asarray(inputs, dtype=np.float32)]
        return {name: np.concatenate([out[name] for out in per_image]) for name in per_image[0]}
