"""RT-DETR's batch-level multi-scale training.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Sec. 5.1: multi-scale training). The per-image augmentations
of the paper are mmdet's own (``PhotoMetricDistortion``, ``Expand``, ``MinIoURandomCrop`` in an
mmcv ``RandomApply``, ``RandomFlip``, ``Resize``): see ``configs/_base_/rtdetr/coco_detection.py``.
"""
import random
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.data_preprocessors import BatchSyncRandomResize
from mmdet.structures import DetDataSample
from mmengine.dist import broadcast
from mmengine.logging import MessageHub
from torch import Tensor

from mmeff.registry import DET_MODELS

# The official list: 480..800 in steps of 32, with 640 three times (it is the test size).
RTDETR_TRAIN_SIZES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
# Message-hub key of the side drawn for the next batch (checkpointed with the hub, so a resumed run
# uses the size the interrupted run drew).
NEXT_SIZE_KEY = 'BatchSyncChoiceResize.next_size'


@DET_MODELS.register_module()
class BatchSyncChoiceResize(BatchSyncRandomResize):
    """Resize every training batch to a side drawn from ``sizes``, the same on every rank.

    A batch augment of ``DetDataPreprocessor`` (``batch_augments=[dict(type=...)]``): images and
    boxes are rescaled together after the per-image pipeline. mmdet's ``BatchSyncRandomResize``
    draws uniformly from a range; RT-DETR draws from an explicit list that weights 640 three
    times, so this subclass only replaces the draw (rank 0 draws, then broadcasts, as mmdet's).
    The drawn side is the height; the width keeps the batch's aspect ratio (square inputs stay
    square, as in RT-DETR). As mmdet's, each batch is resized to the size drawn after the previous
    one; that size is kept in the message hub, so it survives a checkpoint and resume is exact.

    Args:
        sizes (Sequence[int]): Sides to draw from, with repetitions as weights. Defaults to
            RT-DETR's ``RTDETR_TRAIN_SIZES``.
        interval (int): Draw a new side every ``interval`` iterations. Defaults to 1 (every
            batch, as the official collate function).
        stop_epoch (int, optional): From this (0-based) epoch on, batches keep their size, as
            RT-DETRv2 trains its last epoch at the test size. None: never stop.
    """

    def __init__(self,
                 sizes: Sequence[int] = RTDETR_TRAIN_SIZES,
                 interval: int = 1,
                 stop_epoch: Optional[int] = None) -> None:
        if not sizes or any(int(s) != s or s <= 0 for s in sizes):
            raise ValueError(f'sizes must be a non-empty list of positive integer sides, got {sizes}')
        super().__init__(random_size_range=(min(sizes), max(sizes)), interval=interval, size_divisor=1)
        self.sizes = tuple(int(s) for s in sizes)
        self.stop_epoch = stop_epoch

    def forward(self, inputs: Tensor,
                data_samples: List[DetDataSample]) -> Tuple[Tensor, List[DetDataSample]]:
        message_hub = MessageHub.get_current_instance()
        if self.stop_epoch is not None and message_hub.get_info('epoch', 0) >= self.stop_epoch:
            return inputs, data_samples
        if self._input_size is None:  # the first batch of this process, maybe of a resumed run
            self._input_size = message_hub.get_info(NEXT_SIZE_KEY)
        inputs, data_samples = super().forward(inputs, data_samples)
        message_hub.update_info(NEXT_SIZE_KEY, self._input_size)
        return inputs, data_samples

    def _get_random_size(self, aspect_ratio: float, device: torch.device) -> Tuple[int, int]:
        """Rank 0 draws a side from ``sizes``; every rank receives it."""
        size = torch.zeros(2, dtype=torch.long, device=device)
        if self.rank == 0:
            side = random.choice(self.sizes)
            size[0], size[1] = side, round(side * aspect_ratio)
        broadcast(size, 0)
        return int(size[0]), int(size[1])
