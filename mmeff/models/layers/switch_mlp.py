"""Switch Transformer MLP (Fedus et al., https://arxiv.org/abs/2101.03961).

A mixture of ``num_experts`` MLPs where a router sends each token to its single most probable
expert (top-1), scaling the expert's output by the router probability. A load-balancing loss
``alpha * E * sum_i f_i P_i`` (``f_i``: fraction of tokens routed to expert i, ``P_i``: mean router
probability of expert i) keeps the experts equally used.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .vit_blocks import MLP_BLOCKS, Mlp, MlpBlock


@MLP_BLOCKS.register_module()
class SwitchMlp(MlpBlock):
    """Top-1 routed mixture of MLP experts; ``forward(x, return_aux_loss=True)`` also returns the
    load-balancing loss of this batch (``MlpBlock.has_aux_loss``).

    Args:
        num_experts: ``E`` (8 in *Which Transformer to Favor*).
        capacity_factor: tokens an expert takes, relative to an even share; tokens over capacity
            skip the MLP (their residual passes them on). ``None``: no capacity limit.
        balance_weight: ``alpha`` of the load-balancing loss (0.01 in the paper).
    """

    has_aux_loss = True

    def __init__(self,
                 embed_dim: int,
                 mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0,
                 num_experts: int = 8,
                 capacity_factor: Optional[float] = 1.25,
                 balance_weight: float = 0.01):
        super().__init__()
        self.router = nn.Linear(embed_dim, num_experts)
        self.experts = nn.ModuleList(Mlp(embed_dim, mlp_ratio, drop_rate) for _ in range(num_experts))
        self.capacity_factor = capacity_factor
        self.balance_weight = balance_weight

    def forward(self, x: torch.Tensor,
                return_aux_loss: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # T, C: every token of the batch is routed on its own
        probs = self.router(x).softmax(dim=-1)  # T, E
        gate, expert = probs.max(dim=-1)
        num_experts = len(self.experts)
        capacity = x.shape[0] if self.capacity_factor is None else \
            int(self.capacity_factor * x.shape[0] / num_experts)
        out = torch.zeros_like(x)
        for i, mlp in enumerate(self.experts):
            tokens = (expert == i).nonzero(as_tuple=True)[0][:capacity]
            if tokens.numel():
                out[tokens] = gate[tokens, None] * mlp(x[tokens])
        out = out.reshape(shape)
        if not return_aux_loss:
            return out
        fraction = F.one_hot(expert, num_experts).float().mean(dim=0)
        return out, self.balance_weight * num_experts * (fraction * probs.mean(dim=0)).sum()
