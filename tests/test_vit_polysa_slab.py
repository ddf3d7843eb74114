"""Poly-SA and SLAB: each mixer against its paper's formula computed naively, linear cost in the
number of tokens, and SLAB's progressive re-parameterized BatchNorm (schedule, eval, fusion)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.benchmark.flops import count_ops
from mmeff.models.layers.vit_blocks import TOKEN_MIXERS, build_vit_part

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

B, C, HEADS = 2, 16, 2


def tokens(n: int, c: int = C, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, n, c, generator=torch.Generator().manual_seed(seed))


def report(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    diff = (actual - expected).abs().max().item()
    print(f'{name}: max abs diff = {diff:.3e} (tolerance {tol:g})')
    assert actual.shape == expected.shape and diff <= tol


def mixer_macs(cfg: dict, grid: int, prefix: int) -> int:
    mixer = build_vit_part(TOKEN_MIXERS, cfg, embed_dim=C, num_heads=HEADS, grid_size=(grid, grid),
                           num_prefix_tokens=prefix)
    x = tokens(prefix + grid * grid)
    return count_ops(lambda: mixer(x, (grid, grid)))['macs']


# ---------------------------------------------------------------- Poly-SA

def polysa(grid: int = 3, prefix: int = 1, **kwargs) -> nn.Module:
    return TOKEN_MIXERS.build(dict(type='PolySelfAttention', embed_dim=C, num_heads=HEADS, grid_size=(grid, grid),
                                   num_prefix_tokens=prefix, **kwargs)).eval()


def with_random_affine_norm(mixer: nn.Module) -> nn.Module:
    with torch.no_grad():  # a non-trivial LayerNorm affine, so that the test sees where it acts
        mixer.norm.weight.normal_()
        mixer.norm.bias.normal_()
    return mixer


def test_polysa_equals_its_formula_token_by_token():
    mixer, x = with_random_affine_norm(polysa()), tokens(10)
    q, k, v = mixer.split_qkv(x)  # B, heads, N, d
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(HEADS):
            pooled = sum(mixer.p2[h, m] * k[b, h, m] * v[b, h, m] for m in range(10))  # d
            pooled = mixer.norm(pooled)
            for n in range(10):
                out[b, h, n] = q[b, h, n] * mixer.p1[h, n] * pooled
    expected = mixer.proj(out.transpose(1, 2).reshape(B, 10, C))
    report('Poly-SA vs y_n = q_n p1_n LN(sum_m p2_m k_m v_m)', mixer(x, (3, 3)), expected, 1e-5)


def test_polysa_without_norm_is_a_polynomial_with_a_rank_one_mixing_matrix():
    """``q * (A (k * v))`` with the explicit N x N matrix ``A = p1 p2^T``: O(N^2) reference."""
    mixer, x = polysa(), tokens(10)
    mixer.norm = nn.Identity()
    q, k, v = mixer.split_qkv(x)
    mixing = mixer.p1[:, :, None] * mixer.p2[:, None, :]  # heads, N, N
    out = q * (mixing @ (k * v))
    expected = mixer.proj(out.transpose(1, 2).reshape(B, 10, C))
    report('Poly-SA vs q * ((p1 p2^T)(k * v))', mixer(x, (3, 3)), expected, 1e-5)


def test_polysa_with_mean_pooling_is_poly_nl():
    """``p1 = 1``, ``p2 = 1/N``, no norm: Poly-NL's ``q * AvgPool(k * v)``."""
    mixer, x = polysa(), tokens(10)
    mixer.norm = nn.Identity()
    with torch.no_grad():
        mixer.p1.fill_(1.0)
        mixer.p2.fill_(1 / 10)
    q, k, v = mixer.split_qkv(x)
    out = q * (k * v).mean(dim=2, keepdim=True)
    expected = mixer.proj(out.transpose(1, 2).reshape(B, 10, C))
    report('Poly-SA (mean pooling) vs Poly-NL', mixer(x, (3, 3)), expected, 1e-5)


def test_polysa_is_third_order_in_the_tokens():
    mixer, x = polysa(qkv_bias=False), tokens(10)
    mixer.norm = nn.Identity()
    mixer.proj.bias.data.zero_()
    report('Poly-SA(2x) vs 8 Poly-SA(x)', mixer(2 * x, (3, 3)), 8 * mixer(x, (3, 3)), 1e-4)


def test_polysa_cost_is_linear_in_tokens():
    cfg = dict(type='PolySelfAttention')
    small, large = mixer_macs(cfg, 8, 0), mixer_macs(cfg, 16, 0)  # 64 and 256 tokens
    softmax = [mixer_macs(dict(type='SoftmaxAttention'), g, 0) for g in (8, 16)]
    print(f'MACs for 4x the tokens: Poly-SA x{large / small:.2f}, softmax attention x{softmax[1] / softmax[0]:.2f}')
    assert large == 4 * small and softmax[1] > 4.5 * softmax[0]


def test_polysa_token_weights_resize_with_the_resolution():
    src, dst = polysa(grid=4), polysa(grid=6)
    dst.load_state_dict(src.state_dict())
    assert dst.p1.shape == (HEADS, 37)
    assert torch.equal(dst.p1[:, 0], src.p1[:, 0])  # class-token weight kept
    with pytest.raises(ValueError, match='valid input size'):
        src(tokens(37), (6, 6))
