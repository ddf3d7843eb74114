"""Progressive re-parameterized BatchNorm (PRepBN) of SLAB (Guo et al., ICML 2024,
https://arxiv.org/abs/2405.11582): a transformer trained with LayerNorm that infers with BatchNorm.

BatchNorm at inference is a per-channel affine map that folds into the adjacent linear layer, unlike
LayerNorm's per-token statistics; but replacing LayerNorm by BatchNorm from the start makes
transformer training unstable. SLAB therefore

- adds a learnable residual to BatchNorm, ``RepBN(X) = BN(X) + eta X`` (``eta`` initialized to 1),
- and moves from LayerNorm to RepBN during training:
  ``PRepBN(X) = gamma LN(X) + (1 - gamma) RepBN(X)``, where ``gamma`` stays 1 for ``warmup_steps``
  training steps, then decays linearly to 0 over ``total_steps`` (the paper's ``T``);
- in eval mode only RepBN runs; ``switch_to_deploy`` folds BN's statistics and ``eta`` into one
  per-channel scale and shift, and ``fold_into`` that into the linear layer reading the norm's output
  (``ViTBlock.switch_to_deploy`` does so for the mixer's ``qkv`` and the MLP's ``fc1``).

The schedule is a step counter buffer advanced by every training-mode forward, not a runner hook:
the norm is then right wherever the model is trained (MMPretrain, MMDetection, a plain loop), no
config can forget to add it (eval would otherwise run a BatchNorm the model never learned to use),
and the counter is saved with the checkpoint so a resumed run continues the schedule. A step is
one training forward: with gradient accumulation, count ``total_steps`` in forwards.
"""
import torch
from mmengine.registry import MODELS
from torch import nn

from .fuse import bn_affine, fold_affine_into
from .reparam import Reparameterizable


# mmcv's norm layers ('LN', 'BN', ...) live in mmengine's root registry, visible from every scope;
# RepBN and PRepBN sit beside them so that ``build_norm_layer`` finds them from any config.
@MODELS.register_module()
class RepBN(nn.Module):
    """``BN(X) + eta X`` on tokens ``[..., C]``: BatchNorm over all tokens of the batch, per channel."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)
        self.eta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d on [B*N, C] has the statistics of [B, C, N] without the transposes
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape) + self.eta * x

    def affine(self):
        """Eval-mode RepBN as ``x * scale + shift``, each [C]."""
        bn_scale, bn_shift = bn_affine(self.bn)
        return bn_scale + self.eta, bn_shift


@MODELS.register_module()
class PRepBN(nn.Module, Reparameterizable):
    """LayerNorm fading into RepBN over training; RepBN only in eval.

    Args:
        num_features: channels ``C`` of the tokens ``[..., C]``.
        total_steps: ``T``, the training steps over which ``gamma`` decays from 1 to 0 (60,000 in
            the authors' DeiT and in *Which Transformer to Favor*).
        warmup_steps: LayerNorm-only steps before the decay starts.
        eps: the LayerNorm epsilon.
        bn_eps: the BatchNorm epsilon.
    """

    def __init__(self, num_features: int, total_steps: int = 60000, warmup_steps: int = 0, eps: float = 1e-6,
                 bn_eps: float = 1e-5):
        super().__init__()
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(f'PRepBN needs total_steps >= 1 and warmup_steps >= 0, got {total_steps} and '
                             f'{warmup_steps}')
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.layer_norm = nn.LayerNorm(num_features, eps=eps)
        self.rep_bn = RepBN(num_features, eps=bn_eps)
        self.register_buffer('num_steps', torch.zeros((), dtype=torch.long))
        self.deployed = False

    @property
    def gamma(self) -> torch.Tensor:
        """The weight of LayerNorm at the current step (1 -> 0)."""
        progress = (self.num_steps - self.warmup_steps).clamp(min=0) / self.total_steps
        return (1 - progress).clamp(min=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return x * self.scale + self.shift
        if not self.training:
            return self.rep_bn(x)
        gamma = self.gamma.to(x.dtype)
        with torch.no_grad():
            self.num_steps += 1
        # both branches every step, so that DDP sees every parameter used (and BN's statistics
        # are ready when LayerNorm has faded out)
        return gamma * self.layer_norm(x) + (1 - gamma) * self.rep_bn(x)

    def switch_to_deploy(self) -> None:
        if self.deployed:
            return
        scale, shift = self.rep_bn.affine()
        self.scale = nn.Parameter(scale.detach())
        self.shift = nn.Parameter(shift.detach())
        del self.layer_norm, self.rep_bn
        self.deployed = True

    def fold_into(self, linear: nn.Linear) -> None:
        """Make ``linear(x)`` compute ``linear(self(x))`` of the deployed norm; the norm is then
        redundant: ``W (x * s + b) + c = (W diag(s)) x + (W b + c)``."""
        self.switch_to_deploy()
        fold_affine_into(linear, self.scale, self.shift)
