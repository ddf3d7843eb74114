"""INT8 post-training quantization of an OpenVINO model with NNCF, calibrated on real images.

The calibration images are drawn from a dataset the user names (by default the model config's own
test dataset) through the model config's test pipeline and data preprocessor, so they are what the
exported graph sees at inference: same resize (at the graph's static input size, as mmdeploy makes
the pipeline static), same normalization and channel order. The deploy config's
``backend_config.calibration`` holds the options (configs/deploy/*openvino-int8*):

- ``dataset``: None (the model config's ``test_dataloader.dataset``, else ``val_dataloader.dataset``),
  a dataset config dict, or a config file whose ``test_dataloader.dataset`` is used;
- ``num_images``: how many images (the first ones of the dataset);
- ``model_type``: 'transformer' (``nncf.ModelType.TRANSFORMER``: NNCF's attention-aware patterns) or None;
- ``ignored_scope``: ``nncf.IgnoredScope`` keywords (``names``, ``patterns``, ``types``): what stays in
  floating point; docs/deploy.md records what each part costs when quantized.
"""
from typing import Dict, List, Optional, Union

import mmengine
import numpy as np

from .export import model_data_preprocessor

DEFAULT_NUM_IMAGES = 300  # NNCF's default subset size
DatasetLike = Union[None, str, dict]


def calibration_dataset_cfg(model_cfg: mmengine.Config, dataset: DatasetLike = None) -> mmengine.Config:
    """The dataset config to calibrate on (see the module's docstring for ``dataset``)."""
    if isinstance(dataset, str):
        source = mmengine.Config.fromfile(dataset)
        if 'test_dataloader' not in source:
            raise ValueError(f'calibration dataset {dataset!r}: a config file for calibration needs a '
                             'test_dataloader.dataset; or pass the dataset config itself (a dict)')
        return mmengine.Config(source.test_dataloader.dataset.to_dict())
    if dataset is not None:
        return mmengine.Config(dict(dataset))
    for loader in ('test_dataloader', 'val_dataloader'):
        if model_cfg.get(loader) is not None:
            return mmengine.Config(model_cfg[loader].dataset.to_dict())
    raise ValueError('the model config has no test_dataloader or val_dataloader to calibrate on: set '
                     'backend_config.calibration.dataset (a dataset config or a config file)')


def static_test_pipeline(model_cfg: mmengine.Config, input_shape: List[int]) -> List[dict]:
    """The model config's test pipeline, resized to the graph's ``input_shape`` ([W, H]) without
    keeping the aspect ratio (mmdeploy's rule for static graphs), annotations not loaded."""
    loader = model_cfg.get('test_dataloader') or model_cfg.val_dataloader
    pipeline = []
    for transform in mmengine.Config(dict(p=loader.dataset.pipeline)).p:
        if transform.type.split('.')[-1] == 'LoadAnnotations':
            continue
        if transform.type.split('.')[-1] == 'Resize' and 'scale' in transform:
            transform.update(scale=tuple(input_shape), keep_ratio=False)
        pipeline.append(transform.to_dict())
    return pipeline


def calibration_images(deploy_cfg: mmengine.Config, model_cfg: mmengine.Config, dataset: DatasetLike = None,
                       num_images: int = DEFAULT_NUM_IMAGES) -> List[np.ndarray]:
    """The first ``num_images`` images of ``dataset`` as the exported graph takes them: (1, 3, H, W)
    float32 each, through :func:`static_test_pipeline` and the model's data preprocessor.

    Raises:
        ValueError: ``num_images`` < 1, a dataset that cannot be built or has no images, images of
            another size than the graph's, or non-finite or constant images; the message names the
            problem and the setting that fixes it.
    """
    import torch
    from mmdeploy.apis import build_task_processor
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import MODELS
    if num_images < 1:
        raise ValueError(f'calibration.num_images={num_images}: INT8 calibration needs at least one image '
                         f'(NNCF uses {DEFAULT_NUM_IMAGES} by default)')
    width, height = deploy_cfg.onnx_config.input_shape
    dataset_cfg = calibration_dataset_cfg(model_cfg, dataset)
    dataset_cfg.pipeline = static_test_pipeline(model_cfg, [width, height])
    # mmengine's serialization of the annotations fails on an empty dataset; unserialized it builds and
    # is reported as empty below.
    dataset_cfg.serialize_data = False
    task = build_task_processor(model_cfg, deploy_cfg, device='cpu')
    try:
        images = task.build_dataset(dataset_cfg)
    except Exception as error:
        raise ValueError(f'the calibration dataset {dataset_cfg.get("type")!r} could not be built ({error}); '
                         'set backend_config.calibration.dataset to a dataset of images this model config '
                         'reads') from error
    if len(images) == 0:
        raise ValueError(f'the calibration dataset {dataset_cfg.get("type")!r} has no images: point '
                         'backend_config.calibration.dataset at a dataset with images (the model\'s '
                         'test set by default)')
    # the runner's preprocessor, not mmdeploy's task processor's: that one misses mmpretrain's top-level
    # data_preprocessor and would calibrate on unnormalized pixels
    preprocessor = MODELS.build(model_data_preprocessor(model_cfg, deploy_cfg.codebase_config.type))
    batches = []
    with torch.no_grad():
        for index in range(min(num_images, len(images))):
            batch = preprocessor(pseudo_collate([images[index]]), False)['inputs']
            if tuple(batch.shape[2:]) != (height, width):
                raise ValueError(f'calibration image {index} is {tuple(batch.shape[2:])} after the test pipeline; '
                                 f'the graph takes {(height, width)} (onnx_config.input_shape [W, H]): make the '
                                 'test pipeline resize or crop to the graph\'s input size')
            batch = batch.float().numpy()
            if not np.isfinite(batch).all() or np.ptp(batch, axis=(0, 2, 3)).max() == 0:  # every channel constant
                raise ValueError(f'calibration image {index} ({images.get_data_info(index).get("img_path")}) is '
                                 'constant or not finite: calibration would fit every activation range to it; '
                                 'use real images in backend_config.calibration.dataset')
            batches.append(batch)
    if len(batches) < num_images:
        mmengine.print_log(f'INT8 calibration on {len(batches)} images: the dataset has fewer than '
                           f'calibration.num_images={num_images}', 'current')
    return batches


def batched(images: List[np.ndarray], batch_size: int) -> List[np.ndarray]:
    """(1, 3, H, W) images stacked into (batch_size, 3, H, W) batches for a graph exported at a static
    batch size (a graph rejects other batch sizes); the last batch is filled up cyclically with the first images."""
    padded = [images[i % len(images)] for i in range(-(-len(images) // batch_size) * batch_size)]
    return [np.concatenate(padded[i:i + batch_size]) for i in range(0, len(padded), batch_size)]


def ignored_scope(options: Optional[Dict[str, List[str]]]):
    """``nncf.IgnoredScope`` of ``options`` (``names``, ``patterns``, ``types``); NNCF refuses a name or
    type that matches nothing (``validate=True``), so a scope written for another graph fails loudly."""
    import nncf
    return nncf.IgnoredScope(**(options or {}))


def quantize_openvino(model, deploy_cfg: mmengine.Config, model_cfg: mmengine.Config):
    """``model`` (an ``openvino.Model`` of the export) quantized to INT8 by ``nncf.quantize`` on
    :func:`calibration_images`, with the options of ``deploy_cfg.backend_config.calibration``."""
    import nncf
    options = deploy_cfg.backend_config.get('calibration', {})
    images = calibration_images(deploy_cfg, model_cfg, options.get('dataset'),
                                options.get('num_images', DEFAULT_NUM_IMAGES))
    batch_size = model.inputs[0].get_partial_shape()[0]
    if batch_size.is_static and batch_size.get_length() > 1:
        images = batched(images, batch_size.get_length())
    model_type = options.get('model_type')
    return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images),
                         model_type=nncf.ModelType(model_type) if model_type else None,
                         ignored_scope=ignored_scope(options.get('ignored_scope')))
