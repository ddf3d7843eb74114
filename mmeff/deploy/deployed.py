"""A model as it is deployed: built as exported, exported once per batch size for one backend, run
and timed beside the same model in PyTorch eager, in one process.

The exported graph includes the post-processing (RT-DETR's top-K, a classifier's softmax), so the
PyTorch side runs ``predict`` (the way mmdet and mmpretrain users run it) rather than the tensor
forward; ``ratio`` (backend median / PyTorch median) compares like with like.
"""
import os.path as osp
from typing import Dict, Optional, Tuple, Type

import mmengine
import torch

from mmeff.utils.timing import time_fn

from .backends import Backend, backend_class
from .compare import pytorch_outputs
from .export import ConfigLike, build_deploy_model, export_onnx


def export_for(backend: str, model: torch.nn.Module, deploy_cfg: mmengine.Config, out_file: str,
               batch_size: int = 1, device: str = 'cpu', model_cfg: Optional[mmengine.Config] = None) -> str:
    """``model`` (from :func:`~mmeff.deploy.build_deploy_model`) exported as ``backend``'s file
    ``out_file``; the ONNX graph it is made from goes beside it (the same file for ONNX Runtime).
    ``model_cfg`` (the loaded model config) is for builds that need the model's data (OpenVINO INT8
    calibrates on its test pipeline)."""
    onnx_file = export_onnx(model, deploy_cfg, osp.splitext(out_file)[0] + '.onnx', batch_size)
    return backend_class(backend).build(onnx_file, deploy_cfg, out_file, device, model_cfg=model_cfg)


class DeployedModel:
    """A model config exported with a deploy config for ``backend``; one graph per batch size.

    Args:
        deploy_cfg: an mmdeploy deploy config; its ``onnx_config.input_shape`` ([W, H]) is the
            input size of the graphs and of every timing.
        model_cfg: the model's config.
        backend: a name of :data:`~mmeff.deploy.backends.BACKENDS`.
        work_dir: where the exported files go: ``<name><suffix>`` at batch 1,
            ``<name>_batch<N><suffix>`` at batch N.
        checkpoint, eval_idx, trust_checkpoint: as :func:`~mmeff.deploy.build_deploy_model`.
        device: where the backend and the PyTorch model run.
    """

    def __init__(self, deploy_cfg: ConfigLike, model_cfg: ConfigLike, backend: str = 'onnxruntime',
                 work_dir: str = 'work_dirs/deploy', name: str = 'end2end', checkpoint: Optional[str] = None,
                 eval_idx: Optional[int] = None, trust_checkpoint: bool = False, device: str = 'cpu'):
        self.backend: Type[Backend] = backend_class(backend)
        if isinstance(deploy_cfg, str):
            deploy_cfg = mmengine.Config.fromfile(deploy_cfg)
        # Before building anything, so a machine without it (or without its precision) fails fast.
        self.backend.require(device, deploy_cfg)
        self.model, self.deploy_cfg, self.model_cfg = build_deploy_model(deploy_cfg, model_cfg, checkpoint, eval_idx,
                                                                         trust_checkpoint)
        self.model.to(device)
        self.work_dir, self.name, self.device = work_dir, name, device
        width, height = self.deploy_cfg.onnx_config.input_shape
        self.img_size: Tuple[int, int] = (height, width)
        self._exports: Dict[int, str] = {}

    def inputs(self, batch_size: int) -> torch.Tensor:
        """The same random images (values in [0, 1)) on every call, on the CPU."""
        generator = torch.Generator().manual_seed(0)
        return torch.rand(batch_size, 3, *self.img_size, generator=generator)

    def exported(self, batch_size: int = 1) -> str:
        """The backend's file for ``batch_size``, made on first use."""
        if batch_size not in self._exports:
            stem = self.name if batch_size == 1 else f'{self.name}_batch{batch_size}'
            out_file = osp.join(self.work_dir, stem + self.backend.suffix)
            self._exports[batch_size] = export_for(self.backend.name, self.model.cpu(), self.deploy_cfg, out_file,
                                                   batch_size, self.device, self.model_cfg)
            self.model.to(self.device)
        return self._exports[batch_size]

    def session(self, batch_size: int = 1) -> Backend:
        """The backend loaded with the export for ``batch_size`` (as many threads as torch has)."""
        return self.backend(self.exported(batch_size), self.device, torch.get_num_threads())

    def time_backend(self, batch_size: int, warmup: int, repeats: int) -> Dict[str, float]:
        """:func:`~mmeff.utils.timing.time_fn` of the backend on ``batch_size`` images."""
        run = self.session(batch_size).bind(self.inputs(batch_size).numpy())
        return time_fn(run, warmup, repeats, self.device)

    def time_pytorch(self, batch_size: int, warmup: int, repeats: int) -> Dict[str, float]:
        """:func:`~mmeff.utils.timing.time_fn` of PyTorch eager ``predict`` on the same images."""
        inputs = self.inputs(batch_size).to(self.device)
        return time_fn(lambda: pytorch_outputs(self.model, inputs, self.deploy_cfg), warmup, repeats, self.device)

    def latency(self, batch_size: int, warmup: int, repeats: int) -> Dict[str, object]:
        """Backend and PyTorch eager timings of ``batch_size`` images, one after the other, and
        their ratio: the backend's keys, ``pytorch``, ``ratio``, ``threads``, ``file``."""
        backend = self.time_backend(batch_size, warmup, repeats)
        pytorch = self.time_pytorch(batch_size, warmup, repeats)
        return dict(backend, batch_size=batch_size, pytorch=pytorch, ratio=backend['median'] / pytorch['median'],
                    threads=torch.get_num_threads(), file=osp.basename(self.exported(batch_size)))
