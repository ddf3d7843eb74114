"""Random weights with BatchNorm affines and statistics near 1: every branch matters and activations keep
a moderate scale (``timm_parity.randomize_`` scales BN weights named ``bn``/``norm1`` down to ~0.05,
which leaves small logits)."""
import torch


def randomize_unit_bn_(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                is_bn_weight = isinstance(m, torch.nn.BatchNorm2d) and name == 'weight'
                p.copy_(1 + 0.2 * noise if is_bn_weight else 0.1 * noise)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))


def load_backbone_from_timm(backbone: torch.nn.Module, reference: torch.nn.Module, convert) -> None:
    """Load the ``backbone.*`` part of ``convert(reference.state_dict())`` into ``backbone`` (strict)."""
    state = convert(reference.state_dict())
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')})
