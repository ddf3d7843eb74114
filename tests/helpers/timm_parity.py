"""Parity with timm: random weights in the timm model, converted into the mmeff classifier."""
import torch
from mmengine.config import Config

from mmeff.models.timm_twins import TimmTwin, build_like_timm, create_timm_model
from mmeff.paths import config_path
from mmeff.registry import CLS_MODELS


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and normalization statistics everywhere: random init leaves LayerScale ~0 and
    BatchNorm at identity, which would hide mismatches in what they scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if 'norm' in name and name.endswith('weight') else 0.05 * noise)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith('running_var'):
                b.copy_(1 + 0.5 * torch.rand(b.shape, generator=gen))


def build_mmeff(config: str) -> torch.nn.Module:
    """The classifier of ``configs/<config>`` in eval mode (call inside the mmpretrain scope)."""
    return CLS_MODELS.build(Config.fromfile(config_path(config)).model).eval()


def timm_logit_diff(twin: TimmTwin, batch_size: int = 2) -> float:
    """Max |logit difference| of the twin pair on one random batch; prints it with the logit scale."""
    reference = create_timm_model(twin)
    randomize_(reference)
    model = build_like_timm(twin, reference)
    images = torch.randn(batch_size, 3, twin.img_size, twin.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(images), model(images, mode='tensor')
    diff = (expected - actual).abs().max().item()
    print(f'{twin.config} vs timm {twin.timm_name}: max |logit diff| = {diff:.3e} '
          f'(logit scale {expected.abs().max():.2f})')
    return diff
