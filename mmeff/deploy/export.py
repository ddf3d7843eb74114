"""ONNX export through mmdeploy: build the model, fuse RepVGG, export with mmdeploy's rewriters.

The RT-DETR graph reuses mmdeploy's own rewriters unchanged: ``RTDETR`` is an mmdet
``DetectionTransformer`` (rewritten ``forward``: static image shape, no data-sample objects) and
``RTDETRHead`` a ``DeformableDETRHead`` (rewritten ``predict_by_feat``: sigmoid, top-K over
queries x classes, cxcywh -> xyxy in input pixels, ``dets`` (B, K, 5) + ``labels`` (B, K), no NMS).
Deformable attention is ``F.grid_sample`` (ONNX ``GridSample``, opset >= 16), so no custom op is
needed. What mmeff adds is the step mmdeploy's ``torch2onnx`` has no hook for: fusing the RepVGG
blocks and choosing the last decoder layer (``codebase_config.eval_idx``) before the export.
"""
import os.path as osp
from typing import Optional, Tuple, Union

import mmengine
import torch
import torch.nn as nn

from mmeff.engine.checkpoint import checkpoint_loading
from mmeff.models.layers.reparam import switch_to_deploy

from .compat import rewritten_methods_restored, torchscript_onnx_export

ConfigLike = Union[str, mmengine.Config]
MIN_OPSET_GRID_SAMPLE = 16
# the data preprocessor each codebase's models default to
DEFAULT_PREPROCESSORS = dict(mmdet='mmdet.DetDataPreprocessor', mmpretrain='mmpretrain.ClsDataPreprocessor')


def model_data_preprocessor(model_cfg: mmengine.Config, codebase: str) -> dict:
    """The config of the data preprocessor the runner gives the PyTorch model: ``model.data_preprocessor``,
    else the config's top-level one (where mmpretrain configs put it), of the codebase's default type:
    what an exported graph's inputs must go through (evaluation, INT8 calibration)."""
    preprocessor = dict(model_cfg.model.get('data_preprocessor') or model_cfg.get('data_preprocessor') or {})
    preprocessor.setdefault('type', DEFAULT_PREPROCESSORS[codebase])
    return preprocessor


def load_configs(deploy_cfg: ConfigLike, model_cfg: ConfigLike,
                 eval_idx: Optional[int] = None) -> Tuple[mmengine.Config, mmengine.Config]:
    """Load both configs and apply the deploy options to the model config.

    Args:
        eval_idx (int, optional): Last decoder layer of a DETR to run, overriding the deploy
            config's ``codebase_config.eval_idx``, which overrides the model's
            ``test_cfg.eval_idx``.
    """
    from mmdeploy.utils import load_config
    deploy_cfg, model_cfg = load_config(deploy_cfg, model_cfg)
    opset = deploy_cfg.onnx_config.get('opset_version', 11)
    if deploy_cfg.codebase_config.type == 'mmdet' and opset < MIN_OPSET_GRID_SAMPLE:
        raise ValueError(f'onnx_config.opset_version={opset}: RT-DETR\'s deformable attention '
                         f'needs GridSample, set opset_version >= {MIN_OPSET_GRID_SAMPLE}.')
    if eval_idx is None:
        eval_idx = deploy_cfg.codebase_config.get('eval_idx')
    if eval_idx is not None:
        if 'test_cfg' not in model_cfg.model or model_cfg.model.type != 'RTDETR':
            raise ValueError(f'eval_idx={eval_idx} selects a decoder layer of RTDETR; the model '
                             f'is {model_cfg.model.type}: remove eval_idx from the deploy config.')
        model_cfg.model.test_cfg.eval_idx = eval_idx
    return deploy_cfg, model_cfg


def build_deploy_model(deploy_cfg: ConfigLike, model_cfg: ConfigLike,
                       checkpoint: Optional[str] = None, eval_idx: Optional[int] = None,
                       trust_checkpoint: bool = False) -> Tuple[nn.Module, mmengine.Config, mmengine.Config]:
    """The PyTorch model exactly as it is exported: built by mmdeploy's task processor (so the
    configs' ``custom_imports`` and checkpoint loading are mmdeploy's), in eval mode, RepVGG fused.
    The checkpoint loads as in mmeff's runner (:func:`~mmeff.engine.checkpoint.checkpoint_loading`:
    mmengine's own checkpoints; any pickle only with ``trust_checkpoint``).

    Returns:
        tuple: the model and the loaded deploy and model configs.
    """
    from mmdeploy.apis import build_task_processor
    deploy_cfg, model_cfg = load_configs(deploy_cfg, model_cfg, eval_idx)
    task_processor = build_task_processor(model_cfg, deploy_cfg, device='cpu')
    with checkpoint_loading(trust_checkpoint):
        model = switch_to_deploy(task_processor.build_pytorch_model(checkpoint)).eval()
    return model, deploy_cfg, model_cfg


def export_onnx(model: nn.Module, deploy_cfg: mmengine.Config, output_file: str,
                batch_size: int = 1) -> str:
    """Export ``model`` (from :func:`build_deploy_model`) with mmdeploy's rewriters.

    The graph is traced at ``batch_size`` and the input size of ``onnx_config.input_shape``
    ([width, height], mmdeploy's order); dynamic axes come from ``onnx_config.dynamic_axes``.
    A static graph is only valid for the traced batch size; a dynamic-batch one is traced at
    batch 1, whose per-image constants (anchors, valid ratios) broadcast to any batch.

    Returns:
        str: ``output_file``.
    """
    from mmdeploy.apis.onnx import export
    from mmdeploy.utils import get_backend, get_dynamic_axes, get_input_shape, get_onnx_config
    onnx_cfg = get_onnx_config(deploy_cfg)
    input_shape = get_input_shape(deploy_cfg)
    if input_shape is None:
        raise ValueError('onnx_config.input_shape is None: set it to [width, height], the input '
                         'size the graph is traced at.')
    width, height = input_shape
    inputs = torch.rand(batch_size, 3, height, width)
    names = onnx_cfg['input_names'] + onnx_cfg['output_names']
    mmengine.mkdir_or_exist(osp.dirname(osp.abspath(output_file)))
    with torchscript_onnx_export(), rewritten_methods_restored():
        export(model, inputs,
               output_path_prefix=osp.splitext(output_file)[0],
               backend=get_backend(deploy_cfg).value,
               # The rewritten forward makes its own data sample with the input's image shape.
               input_metas=dict(data_samples=None, mode='predict'),
               context_info=dict(deploy_cfg=deploy_cfg),
               input_names=onnx_cfg['input_names'],
               output_names=onnx_cfg['output_names'],
               opset_version=onnx_cfg['opset_version'],
               dynamic_axes=get_dynamic_axes(deploy_cfg, names),
               keep_initializers_as_inputs=onnx_cfg.get('keep_initializers_as_inputs', False),
               # mmdeploy's graph optimizer is a compiled extension the PyPI wheel lacks;
               # constant folding (torch) and ONNX Runtime's own optimizations do that work.
               optimize=False)
    # mmdeploy "restores" forward inside its rewriter context, i.e. pins the rewritten forward on
    # the instance; drop it so that the model runs (and exports again) as before.
    model.__dict__.pop('forward', None)
    return output_file
