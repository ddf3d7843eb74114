"""What is benchmarked: a model built from an OpenMMLab config, with synthetic inputs.

Inputs are a batch of normalized images (standard normal values), fed to the model directly: the
``data_preprocessor`` (normalization, padding, batch augmentations) is outside every measurement,
for inference and for training alike. Detectors also get ``DetDataSample``s carrying the image
metadata (DETRs need it for their masks) and, for training, random ground-truth boxes;
classifiers get ``DataSample``s with random labels.
"""
import copy
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import MODELS, DefaultScope
from mmengine.structures import InstanceData
from torch import nn

import mmeff  # noqa: F401  (registers mmeff's modules)
from mmeff.utils.precision import autocast

NUM_TRAIN_BOXES = 5  # ground-truth boxes per synthetic training image


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_name(config: Union[str, Config]) -> str:
    path = config if isinstance(config, str) else config.filename
    return osp.splitext(osp.basename(path))[0] if path else 'model'


def scope_of(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope is None:
        raise ValueError('the config has no `default_scope`: set it to mmdet or mmpretrain, so that its '
                         'model types are looked up in the right registry')
    return scope


def build_model(cfg: Config, device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in the config's scope, randomly initialized (weights do not change
    speed), in eval mode on ``device``. ``cfg`` is left as it was, so that it builds again."""
    with DefaultScope.overwrite_default_scope(scope_of(cfg)):
        # a copy: mmdet's detectors write their train_cfg / test_cfg into the bbox_head dict they are given
        model = MODELS.build(copy.deepcopy(cfg.model))
    return model.to(device).eval()


def task_of(model: nn.Module) -> str:
    """'det' for an mmdet detector, 'cls' for an mmpretrain classifier."""
    from mmdet.models.detectors import BaseDetector
    from mmpretrain.models.classifiers import BaseClassifier
    if isinstance(model, BaseDetector):
        return 'det'
    if isinstance(model, BaseClassifier):
        return 'cls'
    raise TypeError(f'{type(model).__name__} is neither an mmdet detector nor an mmpretrain classifier')


def num_classes_of(model: nn.Module) -> int:
    """The class count of the model's (first) head."""
    for module in model.modules():
        if isinstance(getattr(module, 'num_classes', None), int):
            return module.num_classes
    raise ValueError(f'{type(model).__name__} has no module with a `num_classes` attribute')


def in_channels_of(cfg: Config) -> int:
    return cfg.model.get('backbone', {}).get('in_channels', 3)


def make_inputs(batch_size: int, img_size: Tuple[int, int], channels: int = 3, device='cpu') -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, channels, *img_size, generator=generator).to(device)


def det_data_samples(batch_size: int, img_size: Tuple[int, int], num_classes: Optional[int] = None,
                     device='cpu') -> list:
    """``DetDataSample``s with the metadata mmdet's preprocessor sets; with ``num_classes``, also
    random ground-truth boxes for training."""
    from mmdet.structures import DetDataSample
    h, w = img_size
    generator = torch.Generator().manual_seed(1)
    samples = []
    for i in range(batch_size):
        sample = DetDataSample(metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                             batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        if num_classes is not None:
            xy = torch.rand(NUM_TRAIN_BOXES, 2, generator=generator) * 0.7
            wh = torch.rand(NUM_TRAIN_BOXES, 2, generator=generator) * 0.25 + 0.05
            boxes = torch.cat([xy, xy + wh], dim=1) * torch.tensor([w, h, w, h])
            labels = torch.randint(num_classes, (NUM_TRAIN_BOXES, ), generator=generator)
            sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample.to(device))
    return samples


def cls_data_samples(batch_size: int, num_classes: int, device='cpu') -> list:
    from mmpretrain.structures import DataSample
    labels = torch.randint(num_classes, (batch_size, ), generator=torch.Generator().manual_seed(1))
    return [DataSample().set_gt_label(label).to(device) for label in labels.tolist()]


class Subject:
    """A model and the synthetic batches its metrics run on."""

    def __init__(self, config: Union[str, Config], img_size: Sequence[int], device: str = 'cpu',
                 cfg_options: Optional[dict] = None):
        self.cfg = load_config(config, cfg_options)
        self.name = config_name(config)
        self.device = device
        self.img_size = tuple(img_size) if len(img_size) == 2 else (img_size[0], img_size[0])
        self.model = build_model(self.cfg, device)
        self.task = task_of(self.model)

    def inputs(self, batch_size: int) -> torch.Tensor:
        return make_inputs(batch_size, self.img_size, in_channels_of(self.cfg), self.device)

    def data_samples(self, batch_size: int, with_labels: bool = False) -> Optional[List]:
        num_classes = num_classes_of(self.model) if with_labels else None
        if self.task == 'det':
            return det_data_samples(batch_size, self.img_size, num_classes, self.device)
        return cls_data_samples(batch_size, num_classes, self.device) if with_labels else None

    def infer_fn(self, batch_size: int, precision: str = 'fp32'):
        """The tensor forward of a batch (no post-processing), as a no-argument callable; under
        ``torch.autocast`` at ``precision`` unless fp32."""
        inputs, samples = self.inputs(batch_size), self.data_samples(batch_size)
        self.model.eval()
        context = autocast(precision, self.device)  # refuses what this machine cannot run, before timing

        @torch.no_grad()
        def infer():
            with context:
                return self.model(inputs, samples, mode='tensor')

        return infer

    def optim_wrapper(self) -> OptimWrapper:
        """The config's optimizer (AdamW if it has none); AMP only where it exists (CUDA)."""
        optim_cfg = self.cfg.get('optim_wrapper', dict(optimizer=dict(type='AdamW', lr=1e-4)))
        if self.device == 'cpu' and optim_cfg.get('type') == 'AmpOptimWrapper':
            optim_cfg = dict(optim_cfg, type='OptimWrapper')
            optim_cfg.pop('loss_scale', None)
        with DefaultScope.overwrite_default_scope(scope_of(self.cfg)):
            return build_optim_wrapper(self.model, optim_cfg)

    def train_step_fn(self, batch_size: int):
        """One forward (``mode='loss'``) + backward + optimizer step, as ``BaseModel.train_step``
        does after its data preprocessor."""
        inputs, samples = self.inputs(batch_size), self.data_samples(batch_size, with_labels=True)
        optim_wrapper = self.optim_wrapper()
        self.model.train()

        def train_step():
            with optim_wrapper.optim_context(self.model):
                losses = self.model(inputs, samples, mode='loss')
            loss, _ = self.model.parse_losses(losses)
            optim_wrapper.update_params(loss)
            return loss

        return train_step
