"""TensorRT engines from the ONNX export, and their latency (GPU machines with TensorRT only).

The RT-DETR paper's protocol (Sec. 5.1): TensorRT FP16 on a T4, batch 1, 640x640, latency
averaged over COCO val images, pre-processing and I/O excluded. The engine comes from mmdeploy's
``onnx2tensorrt`` with the deploy config's ``backend_config`` (fp16_mode, workspace, shapes); the
ONNX graph uses only standard ops (GridSample is native in TensorRT >= 8.5), so no mmdeploy
plugin is needed.
"""
import os.path as osp
from typing import Dict, Iterable, Optional

import mmengine
import numpy as np

from mmeff.benchmark.timing import time_fn

MIN_TENSORRT = '8.5'  # first release with a native GridSample layer


def require_tensorrt() -> None:
    """Raise with the reason when this machine cannot build or run TensorRT engines."""
    import torch
    try:
        import tensorrt
    except ImportError as error:
        raise RuntimeError('TensorRT is not installed: the tensorrt path needs an NVIDIA GPU and '
                           f'pip install tensorrt (>= {MIN_TENSORRT}).') from error
    from mmengine.utils import digit_version
    if digit_version(tensorrt.__version__) < digit_version(MIN_TENSORRT):
        raise RuntimeError(f'TensorRT {tensorrt.__version__} has no GridSample layer: install '
                           f'tensorrt >= {MIN_TENSORRT}.')
    if not torch.cuda.is_available():
        raise RuntimeError('TensorRT needs a CUDA GPU; torch sees none on this machine.')


def build_engine(onnx_file: str, deploy_cfg: mmengine.Config, engine_file: str,
                 device: str = 'cuda:0') -> str:
    """Build a TensorRT engine of ``onnx_file`` with ``deploy_cfg.backend_config`` (e.g.
    configs/deploy/detection_tensorrt-fp16_static-640x640.py: FP16, 1x3x640x640).

    Returns:
        str: ``engine_file``.
    """
    require_tensorrt()
    from mmdeploy.backend.tensorrt.onnx2tensorrt import onnx2tensorrt
    work_dir, save_file = osp.split(osp.abspath(engine_file))
    mmengine.mkdir_or_exist(work_dir)
    onnx2tensorrt(work_dir, save_file, 0, deploy_cfg, onnx_file, device=device)
    return engine_file


def tensorrt_latency(engine_file: str,
                     inputs: Optional[Iterable[np.ndarray]] = None,
                     input_shape=(1, 3, 640, 640),
                     warmup: int = 20,
                     repeats: int = 200,
                     device: str = 'cuda:0') -> Dict[str, float]:
    """Seconds per engine execution, with the input already on the GPU (I/O excluded).

    Args:
        inputs (Iterable[np.ndarray], optional): Pre-processed images (1, 3, 640, 640) float32,
            e.g. COCO val2017 through the model's test pipeline and data preprocessor: the
            paper's protocol averages over them (``repeats`` runs each). A random input of
            ``input_shape`` when None.

    Returns:
        dict: :func:`mmeff.benchmark.timing.time_fn`'s keys; with ``inputs``, the mean over
        images of each key and ``num_images``.
    """
    require_tensorrt()
    import torch
    from mmdeploy.backend.tensorrt import TRTWrapper
    engine = TRTWrapper(engine_file, device_id=torch.device(device).index or 0)
    if inputs is None:
        inputs = [np.random.default_rng(0).random(input_shape, dtype=np.float32)]
    per_image = []
    for image in inputs:
        feed = dict(input=torch.from_numpy(np.ascontiguousarray(image)).to(device))
        per_image.append(time_fn(lambda: engine(feed), warmup, repeats, device=device))
    stats = {key: float(np.mean([t[key] for t in per_image])) for key in per_image[0]}
    return dict(stats, num_images=len(per_image))
