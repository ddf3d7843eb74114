"""The PyTorch model and its ONNX Runtime export side by side: outputs (parity) and latency."""
from typing import Dict, Optional

import mmengine
import numpy as np
import torch
import torch.nn as nn

from mmeff.benchmark.timing import time_fn
from .export import build_deploy_model, export_onnx
from .runtime import create_session


def pytorch_outputs(model: nn.Module, inputs: torch.Tensor,
                    deploy_cfg: mmengine.Config) -> Dict[str, np.ndarray]:
    """Eager PyTorch predictions in the export's output format, for parity checks.

    Detection: ``dets`` (B, K, 5) = x1, y1, x2, y2 in input pixels, score; ``labels`` (B, K).
    Classification: ``output`` (B, num_classes) class probabilities.
    """
    task = deploy_cfg.codebase_config.type
    with torch.no_grad():
        if task == 'mmdet':
            from mmdet.structures import DetDataSample
            img_shape = tuple(inputs.shape[2:])
            samples = [DetDataSample(metainfo=dict(img_shape=img_shape)) for _ in inputs]
            results = [r.pred_instances for r in model.predict(inputs, samples, rescale=False)]
            dets = [torch.cat([r.bboxes, r.scores[:, None]], -1) for r in results]
            return dict(dets=torch.stack(dets).numpy(),
                        labels=torch.stack([r.labels for r in results]).numpy())
        if task == 'mmpretrain':
            results = model.predict(inputs)
            return dict(output=torch.stack([r.pred_score for r in results]).numpy())
    raise ValueError(f'codebase_config.type={task!r}: mmeff.deploy compares mmdet and mmpretrain '
                     f'models only.')


def compare_latency(deploy_cfg, model_cfg, onnx_file: str, checkpoint: Optional[str] = None,
                    eval_idx: Optional[int] = None, warmup: int = 3, repeats: int = 10,
                    num_threads: Optional[int] = None) -> Dict[str, object]:
    """Export ``model_cfg`` with ``deploy_cfg`` and time PyTorch eager against ONNX Runtime in one
    process, same input (batch 1, the deploy config's input size), same thread count.

    PyTorch runs ``predict`` of the same fused model (the way mmdet users run it); ONNX Runtime
    the exported graph with all its optimizations.

    Returns:
        dict: ``pytorch`` and ``onnxruntime`` (:func:`mmeff.benchmark.timing.time_fn` results,
        seconds), ``ratio`` (median ORT / median PyTorch), ``threads``, ``input_shape``.
    """
    num_threads = num_threads or torch.get_num_threads()
    torch.set_num_threads(num_threads)
    model, deploy_cfg, _ = build_deploy_model(deploy_cfg, model_cfg, checkpoint, eval_idx)
    export_onnx(model, deploy_cfg, onnx_file)
    width, height = deploy_cfg.onnx_config.input_shape
    inputs = torch.rand(1, 3, height, width)
    session = create_session(onnx_file, num_threads)
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    pytorch = time_fn(lambda: pytorch_outputs(model, inputs, deploy_cfg), warmup, repeats)
    onnxruntime = time_fn(lambda: session.run(None, feed), warmup, repeats)
    return dict(pytorch=pytorch, onnxruntime=onnxruntime,
                ratio=onnxruntime['median'] / pytorch['median'], threads=num_threads,
                input_shape=list(inputs.shape))
