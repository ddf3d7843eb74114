"""Parity with timm: random weights in the timm model, converted into the mmeff classifier."""
import torch
from mmengine.config import Config

from mmeff.converters.twins import TimmTwin, build_like_timm, compare_logits, create_timm_model
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


NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)


def randomize_scaled_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights that keep every twin's activations input-dependent: norm layers (any
    BatchNorm/LayerNorm/GroupNorm, by type, not name) get affines ~1 and BN statistics ~1, every
    other weight of 2+ dims N(0, 1/fan_in) (variance-preserving), every other 1-D tensor (biases,
    LayerScale, ...) N(0, 0.1^2).

    :func:`randomize_` recognizes norms by name, so BN weights named ``bn``/``conv.bn`` become
    ~0.05 and the features of ResNet, FastViT, EfficientFormerV2, XCiT vanish: their logits are the
    head's bias (the logits of two images differ by ~1e-7 of their std, FastViT's by 0), and
    the parity check would see only the head. ``unit_bn.randomize_unit_bn_`` does not know
    LayerNorm and its conv weights are not scaled by fan-in (ResNet-18 logits ~1e8, NeXt-ViT NaN).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, NORM_LAYERS) or hasattr(module, 'running_var')
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                if is_norm:
                    p.copy_(1 + 0.1 * noise if name == 'weight' else 0.1 * noise)
                elif p.dim() >= 2:
                    p.copy_(noise / p[0].numel()**0.5)
                else:
                    p.copy_(0.1 * noise)
            for name, b in module.named_buffers(recurse=False):
                if name == 'running_mean':
                    b.copy_(0.1 * torch.randn(b.shape, generator=gen))
                elif name == 'running_var':
                    b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def timm_logit_diff(twin: TimmTwin, batch_size: int = 2) -> dict:
    """The twin pair (:func:`randomize_scaled_` weights) on one random batch: ``diff``, the max |logit
    difference|; ``spread``, the std of timm's logits; ``signal``, the std of the difference between
    the logits of the first two images (how much the logits depend on the input). Prints them."""
    reference = create_timm_model(twin)
    randomize_scaled_(reference)
    model = build_like_timm(twin, reference)
    images = torch.randn(batch_size, 3, twin.img_size, twin.img_size, generator=torch.Generator().manual_seed(1))
    result = compare_logits(reference, model, images)  # raises if the logits' shapes differ
    print(f"{twin.config} vs timm {twin.timm_name}: max |logit diff| = {result['diff']:.3e}, logit std "
          f"{result['spread']:.3e} (diff / std {result['diff'] / result['spread']:.2e}), std of the "
          f"difference between two images' logits {result['signal']:.3e}")
    return result
