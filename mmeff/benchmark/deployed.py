"""The onnxruntime and tensorrt backends: a config's model exported by :mod:`mmeff.deploy` and
timed beside the same (fused, eval-mode) model in PyTorch eager, in one process.

The exported graph includes the post-processing (RT-DETR's top-K, a classifier's softmax), so the
PyTorch side runs ``predict`` rather than the tensor forward the pytorch backend times; the
``ratio`` (backend median / PyTorch median) compares like with like.
"""
import os
import os.path as osp
from typing import Callable, Dict, Optional, Sequence

import mmengine
import numpy as np
import torch

from mmeff.paths import config_path
from .timing import time_fn

# the deploy config a backend uses for a task when none is given (--deploy-cfg)
DEFAULT_DEPLOY_CFGS = {
    ('det', 'onnxruntime'): 'detection_onnxruntime_static-640x640.py',
    ('cls', 'onnxruntime'): 'classification_onnxruntime_static-224x224.py',
    ('det', 'tensorrt'): 'detection_tensorrt-fp16_static-640x640.py',
    ('cls', 'tensorrt'): 'classification_tensorrt-fp16_static-224x224.py',
}


def require_backend(backend: str) -> None:
    """Raise with the reason and the fix when ``backend`` cannot run on this machine."""
    try:
        import mmdeploy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f'the {backend} backend exports through mmdeploy and ONNX: install the deploy extra '
                           f'(pip install -e .[deploy]); missing: {error.name}') from error
    if backend == 'tensorrt':
        from mmeff.deploy.tensorrt import require_tensorrt
        require_tensorrt()


def default_deploy_cfg(task: str, backend: str) -> str:
    return config_path(osp.join('deploy', DEFAULT_DEPLOY_CFGS[(task, backend)]))


class DeployedSubject:
    """A model config exported for ``backend`` at ``img_size``; one static graph per batch size.

    Args:
        model_cfg: the model's config (already loaded, overrides applied).
        task: 'det' or 'cls' (picks the default deploy config).
        deploy_cfg: an mmdeploy deploy config; its input size is replaced by ``img_size``
            (onnxruntime) or must equal it (tensorrt, whose engine shapes are in the config).
        work_dir: where the ONNX files and engines go.
    """

    def __init__(self, model_cfg: mmengine.Config, task: str, backend: str, img_size: Sequence[int],
                 work_dir: str, deploy_cfg: Optional[str] = None, device: str = 'cpu'):
        from mmdeploy.utils import load_config

        from mmeff.deploy.export import build_deploy_model
        require_backend(backend)
        if backend == 'onnxruntime' and device != 'cpu':
            raise ValueError(f'the onnxruntime backend runs on the CPU here; got --device {device}')
        self.backend, self.device, self.work_dir = backend, device, work_dir
        self.img_size = tuple(img_size)  # H, W
        deploy_cfg = load_config(deploy_cfg or default_deploy_cfg(task, backend))[0]
        width_height = [self.img_size[1], self.img_size[0]]
        if backend == 'tensorrt' and list(deploy_cfg.onnx_config.input_shape) != width_height:
            raise ValueError(f'the TensorRT deploy config builds engines for {deploy_cfg.onnx_config.input_shape} '
                             f'(W, H) but --img-size is {width_height}: pass a matching --deploy-cfg')
        deploy_cfg.onnx_config.input_shape = width_height
        self.model, self.deploy_cfg, _ = build_deploy_model(deploy_cfg, model_cfg)
        self.model.to(device)
        self._exports: Dict[int, str] = {}

    def inputs(self, batch_size: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(batch_size, 3, *self.img_size, generator=generator)

    def exported(self, batch_size: int) -> str:
        """The backend file (ONNX graph or TensorRT engine) for ``batch_size``, made on first use."""
        if batch_size not in self._exports:
            from mmeff.deploy.export import export_onnx
            onnx_file = export_onnx(self.model.cpu(), self.deploy_cfg,
                                    osp.join(self.work_dir, f'batch{batch_size}.onnx'), batch_size)
            self.model.to(self.device)
            if self.backend == 'tensorrt':
                from mmeff.deploy.tensorrt import build_engine
                onnx_file = build_engine(onnx_file, self.deploy_cfg, osp.join(self.work_dir, f'batch{batch_size}.engine'),
                                         self.device)
            self._exports[batch_size] = onnx_file
        return self._exports[batch_size]

    def pytorch_fn(self, batch_size: int) -> Callable[[], object]:
        """PyTorch eager ``predict`` of the exported model on the same input."""
        from mmeff.deploy.compare import pytorch_outputs
        inputs = self.inputs(batch_size).to(self.device)
        return lambda: pytorch_outputs(self.model, inputs, self.deploy_cfg)

    def time_backend(self, batch_size: int, warmup: int, repeats: int) -> Dict[str, float]:
        exported = self.exported(batch_size)
        if self.backend == 'tensorrt':
            from mmeff.deploy.tensorrt import tensorrt_latency
            return tensorrt_latency(exported, input_shape=tuple(self.inputs(batch_size).shape), warmup=warmup,
                                    repeats=repeats, device=self.device)
        from mmeff.deploy.runtime import create_session
        session = create_session(exported, num_threads=torch.get_num_threads())
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(self.inputs(batch_size).numpy())}
        return time_fn(lambda: session.run(None, feed), warmup, repeats)

    def latency(self, batch_size: int, warmup: int, repeats: int) -> Dict[str, object]:
        """Backend and PyTorch eager timings of ``batch_size`` images, side by side, and their ratio."""
        backend = self.time_backend(batch_size, warmup, repeats)
        pytorch = time_fn(self.pytorch_fn(batch_size), warmup, repeats, self.device)
        return dict(backend, batch_size=batch_size, pytorch=pytorch, ratio=backend['median'] / pytorch['median'],
                    threads=torch.get_num_threads(), file=os.path.basename(self.exported(batch_size)))
