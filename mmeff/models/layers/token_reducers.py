"""Token-sequence reducers of *Which Transformer to Favor*: removal, merging and summary tokens.

Each reducer shortens the token sequence ``[B, N, C] -> [B, N', C]`` or masks tokens out of later
attention, keeping the class token in front; ``TokenReducer`` (``vit_blocks``) states where they run,
what they receive and what they need from the mixers.
"""
import dataclasses
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .vit_blocks import TOKEN_REDUCERS, QueryKey, TokenReducer, TokenState


def class_attention(query_key: QueryKey) -> torch.Tensor:
    """Attention of the class token to the patch tokens, averaged over heads: [B, N - 1]."""
    q, k = query_key.q, query_key.k  # B, heads, N, d
    attn = (q[:, :, :1] @ k.transpose(-1, -2) * query_key.scale).softmax(-1)  # B, heads, 1, N
    return attn[:, :, 0, 1:].mean(dim=1)


@TOKEN_REDUCERS.register_module()
class EViTReorganize(TokenReducer):
    """EViT token reorganization (Liang et al., https://arxiv.org/abs/2202.07800).

    Between a block's attention and its MLP, keep the ``keep_rate`` fraction of patch tokens the
    class token attends to most; the inattentive rest is dropped or, with ``fuse_token``, fused
    into one token (their average weighted by the class attention; EViT-fuse).
    """

    position = 'after_mixer'
    needs_query_key = True

    def __init__(self, keep_rate: float = 0.7, fuse_token: bool = False):
        super().__init__()
        if not 0 < keep_rate <= 1:
            raise ValueError(f'keep_rate must be in (0, 1], got {keep_rate}')
        self.keep_rate = keep_rate
        self.fuse_token = fuse_token

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        num_patches = x.shape[1] - 1
        num_keep = math.ceil(self.keep_rate * num_patches)
        if num_keep == num_patches:
            return x, state
        scores = class_attention(query_key)  # B, N - 1
        order = scores.argsort(dim=-1, descending=True)
        keep, drop = order[:, :num_keep], order[:, num_keep:]
        patches = x[:, 1:]
        kept = patches.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        tokens = [x[:, :1], kept]
        if self.fuse_token:
            weight = scores.gather(1, drop)[..., None]  # B, N_drop, 1
            dropped = patches.gather(1, drop[..., None].expand(-1, -1, x.shape[-1]))
            tokens.append((weight * dropped).sum(1, keepdim=True) / weight.sum(1, keepdim=True))
        return torch.cat(tokens, dim=1), dataclasses.replace(state, hw=None)


@TOKEN_REDUCERS.register_module()
class ToMeMerge(TokenReducer):
    """Token merging by bipartite soft matching (ToMe, Bolya et al., https://arxiv.org/abs/2210.09461).

    Between a block's attention and its MLP, split the tokens alternately into sets A and B, match
    each token of A to its most similar token of B (cosine similarity of the keys, averaged over
    heads), and merge the ``r`` most similar pairs by an average weighted by token size (the number
    of patches a token stands for, tracked across blocks in ``TokenState.token_sizes``). The class
    token is never merged. Proportional attention (``log s`` added to the attention logits) is not
    applied.
    """

    position = 'after_mixer'
    needs_query_key = True

    def __init__(self, r: int = 8):
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        B, N, C = x.shape
        r = min(self.r, N // 2 - 1)
        if r <= 0:
            return x, state
        sizes = state.token_sizes
        if sizes is None:
            sizes = x.new_ones(B, N, 1)
        metric = F.normalize(query_key.k.mean(dim=1), dim=-1)  # B, N, d
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # B, N_a, N_b
        scores[:, 0] = -math.inf  # token 0 of A is the class token
        best, match = scores.max(dim=-1)
        ranked = best.argsort(dim=-1, descending=True)
        src, unmerged = ranked[:, :r], ranked[:, r:].sort(dim=-1).values  # class token stays first
        dst = match.gather(1, src)

        def merge(t: torch.Tensor) -> torch.Tensor:
            """Sum the merged A tokens of ``t`` [B, N, c] into their B partners."""
            a, b = t[:, ::2], t[:, 1::2]
            c = t.shape[-1]
            kept = a.gather(1, unmerged[..., None].expand(-1, -1, c))
            b = b.scatter_add(1, dst[..., None].expand(-1, -1, c), a.gather(1, src[..., None].expand(-1, -1, c)))
            return torch.cat([kept, b], dim=1)

        merged_sizes = merge(sizes)
        return merge(x * sizes) / merged_sizes, dataclasses.replace(state, hw=None, token_sizes=merged_sizes)


@TOKEN_REDUCERS.register_module()
class TokenLearner(TokenReducer):
    """TokenLearner (Ryoo et al., https://arxiv.org/abs/2106.11297).

    Before block ``layer``, the patch tokens are replaced by ``learned_tokens`` learned tokens: each
    is the spatial average of the tokens weighted by its own attention map
    ``alpha_i(X) = sigmoid(MLP(LN(X)))_i``. The class token is kept in front. (``learned_tokens``,
    not ``num_tokens``: the skeleton fills that name with its sequence length.)
    """

    position = 'before_block'

    def __init__(self, embed_dim: int, learned_tokens: int = 8):
        super().__init__()
        self.maps = nn.Sequential(
            nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, learned_tokens))

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        patches = x[:, 1:]
        weights = self.maps(patches).sigmoid()  # B, N - 1, S
        learned = weights.transpose(1, 2) @ patches / patches.shape[1]  # B, S, C
        return torch.cat([x[:, :1], learned], dim=1), dataclasses.replace(state, hw=None)


@TOKEN_REDUCERS.register_module()
class TokenLearnerV11(TokenReducer):
    """TokenLearner v1.1 (scenic's ``TokenLearnerModuleV11``), the learner Which Transformer to Favor trains.

    Before block ``layer``, the patch tokens are replaced by ``learned_tokens`` learned tokens: each
    is a convex combination of the patch tokens, with weights ``softmax_N(MLP(LN(X)))_i`` from a GELU
    MLP of hidden width ``mlp_ratio * embed_dim``. Version 1.1 replaces the sigmoid spatial maps of
    ``TokenLearner`` by this MLP and a softmax over the tokens. The class token is kept in front.

    Args:
        learned_tokens: the number of learned tokens (not ``num_tokens``: the skeleton offers that
            name as its sequence length).
        mlp_ratio: hidden width of the MLP over ``embed_dim``; the skeleton's, as the authors'.
        drop_rate: dropout after both layers of the MLP; the skeleton's, as the authors'.
        norm_eps: the LayerNorm's epsilon (the authors': the ViT's 1e-6).
    """

    position = 'before_block'

    def __init__(self, embed_dim: int, learned_tokens: int = 8, mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, num_prefix_tokens: int = 1, norm_eps: float = 1e-6):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        hidden = int(embed_dim * mlp_ratio)
        self.maps = nn.Sequential(
            nn.LayerNorm(embed_dim, eps=norm_eps), nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(drop_rate),
            nn.Linear(hidden, learned_tokens), nn.Dropout(drop_rate))

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        prefix, patches = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        weights = self.maps(patches).transpose(1, 2).softmax(dim=-1)  # B, S, N: a distribution over tokens
        return torch.cat([prefix, weights @ patches], dim=1), dataclasses.replace(state, hw=None)


@TOKEN_REDUCERS.register_module()
class DynamicViTPredictor(TokenReducer):
    """DynamicViT's prediction module (Rao et al., https://arxiv.org/abs/2106.02034).

    Before block ``layer``, an MLP scores every patch token from its local feature and the global
    (mean over kept tokens) feature and decides to keep or drop it. Training: the decision is a
    hard Gumbel-softmax sample (straight-through), multiplied into the running
    ``TokenState.keep_mask``, and later attention ignores dropped keys (tokens stay in place).
    Inference: the top ``keep_ratio * N`` tokens are kept and the rest removed. In training it adds
    the ratio loss ``loss_weight * mean_b (keep_ratio - mean_i keep_i)^2`` to the state's
    auxiliary losses.

    Args:
        keep_ratio: the fraction of the original patch tokens kept after this stage (cumulative,
            e.g. 0.7, 0.49, 0.343 for three stages of rate 0.7).
        loss_weight: weight of this stage's ratio loss (the paper averages the stages with weight 2).
    """

    position = 'before_block'
    masks_tokens = True  # in training

    def __init__(self, embed_dim: int, keep_ratio: float = 0.7, loss_weight: float = 2.0):
        super().__init__()
        self.keep_ratio = keep_ratio
        self.loss_weight = loss_weight
        self.local = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.score = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2), nn.GELU(), nn.Linear(embed_dim // 2, embed_dim // 4), nn.GELU(),
            nn.Linear(embed_dim // 4, 2))

    def keep_logits(self, patches: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [B, N, 2] (keep, drop) from local and masked-global features."""
        feat = self.local(patches)  # B, N, C
        local, global_ = feat.chunk(2, dim=-1)
        weights = keep[..., None]
        global_ = (global_ * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1e-6)
        return self.score(torch.cat([local, global_.expand(-1, local.shape[1], -1)], -1)).log_softmax(-1)

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        patches = x[:, 1:]
        if self.training:
            prev = state.keep_mask if state.keep_mask is not None else x.new_ones(x.shape[:2])  # B, N
            logits = self.keep_logits(patches, prev[:, 1:])
            keep = F.gumbel_softmax(logits, hard=True)[..., 0] * prev[:, 1:]
            ratio_loss = self.loss_weight * (self.keep_ratio - keep.mean(dim=1)).pow(2).mean()
            state = dataclasses.replace(state, keep_mask=torch.cat([prev[:, :1], keep], dim=1))
            return x, state.with_aux_loss(type(self).__name__, ratio_loss)
        num_keep = math.ceil(self.keep_ratio * state.num_input_patches)
        scores = self.keep_logits(patches, patches.new_ones(patches.shape[:2]))[..., 0]
        kept = scores.topk(min(num_keep, patches.shape[1]), dim=1).indices.sort(dim=1).values
        kept_tokens = patches.gather(1, kept[..., None].expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :1], kept_tokens], 1), dataclasses.replace(state, hw=None)


@TOKEN_REDUCERS.register_module()
class AViTHalting(TokenReducer):
    """A-ViT adaptive token halting (Yin et al., https://arxiv.org/abs/2112.07658).

    Before block ``layer`` (i.e. after the previous one), every running token scores its halting
    probability from its first embedding channel, ``h = sigmoid(gate_scale * e_0 - gate_center)``;
    a token halts once its cumulative score (``TokenState.halting_scores``) reaches ``1 - eps`` and
    is then masked out of all later attention (``TokenState.keep_mask``; the class token never
    halts). It adds this layer's share of the ponder loss ``ponder_weight * mean_k (N_k + R_k)``
    (halting depth plus remainder) to the state's auxiliary losses. Tokens stay in place, masked, in
    training and inference; the distribution-prior loss of the paper is not included.
    """

    position = 'before_block'
    masks_tokens = True

    def __init__(self, gate_scale: float = 10.0, gate_center: float = 30.0, eps: float = 0.01,
                 ponder_weight: float = 5e-4):
        super().__init__()
        self.gate_scale = gate_scale
        self.gate_center = gate_center
        self.eps = eps
        self.ponder_weight = ponder_weight

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        running = state.keep_mask if state.keep_mask is not None else x.new_ones(x.shape[:2])  # B, N
        cumulative = state.halting_scores if state.halting_scores is not None else x.new_zeros(x.shape[:2])
        score = torch.sigmoid(self.gate_scale * x[..., 0] - self.gate_center) * running
        score = torch.cat([score.new_zeros(score[:, :1].shape), score[:, 1:]], dim=1)  # class token runs
        halts = (cumulative + score >= 1 - self.eps).float() * running
        # ponder cost: one step per running token, plus the remainder of the tokens halting now
        ponder = running.detach() + halts * (1 - cumulative)
        state = dataclasses.replace(state, halting_scores=cumulative + score, keep_mask=running * (1 - halts))
        return x, state.with_aux_loss(type(self).__name__, self.ponder_weight * ponder[:, 1:].mean())
