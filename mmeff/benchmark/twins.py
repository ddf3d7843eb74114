"""Throughput of mmeff models beside their timm twins (:mod:`mmeff.models.timm_twins`), same
weights, same input, one process.

Both run eval-mode eager PyTorch under ``no_grad`` with re-parameterizable blocks fused
(mmeff: :func:`~mmeff.models.layers.reparam.switch_to_deploy`, timm: ``reparameterize_model``).
Their calls alternate one by one (:func:`~mmeff.benchmark.timing.time_interleaved`) and the ratio
is the median of the ratios of neighbouring calls, so that load from other processes, which comes
and goes over seconds, does not favour whichever ran in a quiet moment.
"""
from typing import Dict, Sequence

import numpy as np
import torch
from mmengine.registry import DefaultScope

from mmeff.models.layers.reparam import switch_to_deploy
from mmeff.models.timm_twins import TimmTwin, build_like_timm, create_timm_model
from .timing import time_interleaved


def fused_pair(twin: TimmTwin) -> Dict[str, torch.nn.Module]:
    """timm's model (random weights) and mmeff's with the same weights, both fused for inference."""
    from timm.utils import reparameterize_model
    reference = create_timm_model(twin)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = build_like_timm(twin, reference)
    return dict(timm=reparameterize_model(reference), mmeff=switch_to_deploy(model))


def twin_throughput(twin: TimmTwin, batch_sizes: Sequence[int] = (1, 32), warmup: int = 3,
                    repeats: int = 20) -> Dict[str, object]:
    """Images/s of each implementation at each batch size (from the median call), the speed ratio
    mmeff / timm (median over neighbouring pairs of calls of timm's time / mmeff's, with its quartiles)
    and the max |logit difference| of the fused pair on the timed input (both compute the same)."""
    models = fused_pair(twin)
    result = dict(config=twin.config, timm_name=twin.timm_name, arch=twin.arch, img_size=twin.img_size,
                  per_batch_size={})
    for batch_size in batch_sizes:
        images = torch.randn(batch_size, 3, twin.img_size, twin.img_size, generator=torch.Generator().manual_seed(0))
        forwards = dict(timm=lambda: models['timm'](images), mmeff=lambda: models['mmeff'](images, mode='tensor'))
        with torch.no_grad():
            timings = time_interleaved(forwards, warmup, repeats)
            diff = (forwards['timm']() - forwards['mmeff']()).abs().max().item()
        pair_ratios = np.array(timings['timm']['times']) / np.array(timings['mmeff']['times'])
        result['per_batch_size'][batch_size] = dict(
            timm_img_s=batch_size / timings['timm']['median'], mmeff_img_s=batch_size / timings['mmeff']['median'],
            ratio=float(np.median(pair_ratios)), ratio_q1=float(np.percentile(pair_ratios, 25)),
            ratio_q3=float(np.percentile(pair_ratios, 75)), max_logit_diff=diff)
    return result
