"""Throughput of mmeff models beside their timm twins (:mod:`mmeff.converters.twins`), same
weights, same input, one process.

Both run eval-mode eager PyTorch under ``no_grad`` with re-parameterizable blocks fused
(mmeff: :func:`~mmeff.models.layers.reparam.switch_to_deploy`, timm: ``reparameterize_model``).
Their calls alternate one by one (:func:`~mmeff.utils.timing.time_interleaved`) and the ratio
is the median of the ratios of neighbouring calls, so that load from other processes, which comes
and goes over seconds, does not favour whichever ran in a quiet moment.
"""
import copy
import functools
from typing import Dict, Sequence

import numpy as np
import torch
from mmengine.registry import DefaultScope

from mmeff.converters.twins import TimmTwin, build_like_timm, create_timm_model
from mmeff.models.layers.reparam import switch_to_deploy
from mmeff.utils.timing import time_interleaved


def fused_pair(twin: TimmTwin) -> Dict[str, torch.nn.Module]:
    """timm's model (random weights) and mmeff's with the same weights, both fused for inference."""
    from timm.utils import reparameterize_model
    reference = create_timm_model(twin)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = build_like_timm(twin, reference)
    return dict(timm=reparameterize_model(reference), mmeff=switch_to_deploy(model))


def _ratio_stats(numerator_times: Sequence[float], denominator_times: Sequence[float]) -> Dict[str, float]:
    """Median and quartiles of the ratios of neighbouring calls."""
    ratios = np.array(numerator_times) / np.array(denominator_times)
    return dict(ratio=float(np.median(ratios)), ratio_q1=float(np.percentile(ratios, 25)),
                ratio_q3=float(np.percentile(ratios, 75)))


def twin_throughput(twin: TimmTwin, batch_sizes: Sequence[int] = (1, 32), warmup: int = 3,
                    repeats: int = 20, control: bool = False) -> Dict[str, object]:
    """Images/s of each implementation at each batch size (from the median call), the speed ratio
    mmeff / timm (median over neighbouring pairs of calls of timm's time / mmeff's, with its quartiles)
    and the max |logit difference| of the fused pair on the timed input (both compute the same).

    ``control`` also times a second copy of timm's model in the same rotation and reports timm / copy as
    ``control_ratio``: what this protocol measures between two identical models, the noise floor of ``ratio``.
    """
    models = fused_pair(twin)
    if control:
        models['timm_copy'] = copy.deepcopy(models['timm'])
    result = dict(config=twin.config, timm_name=twin.timm_name, arch=twin.arch, img_size=twin.img_size,
                  per_batch_size={})
    for batch_size in batch_sizes:
        images = torch.randn(batch_size, 3, twin.img_size, twin.img_size, generator=torch.Generator().manual_seed(0))
        forwards = {name: functools.partial(model, images) for name, model in models.items()}
        forwards['mmeff'] = functools.partial(models['mmeff'], images, mode='tensor')
        with torch.no_grad():
            timings = time_interleaved(forwards, warmup, repeats)
            diff = (forwards['timm']() - forwards['mmeff']()).abs().max().item()
        numbers = dict(timm_img_s=batch_size / timings['timm']['median'],
                       mmeff_img_s=batch_size / timings['mmeff']['median'],
                       **_ratio_stats(timings['timm']['times'], timings['mmeff']['times']), max_logit_diff=diff)
        if control:
            numbers.update({f'control_{k}': v for k, v in
                            _ratio_stats(timings['timm']['times'], timings['timm_copy']['times']).items()})
        result['per_batch_size'][batch_size] = numbers
    return result
