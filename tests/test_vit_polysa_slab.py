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


# ---------------------------------------------------------------- SLAB

def slab(grid: int = 3, prefix: int = 0) -> nn.Module:
    mixer = TOKEN_MIXERS.build(dict(type='SimplifiedLinearAttention', embed_dim=C, num_heads=HEADS,
                                    grid_size=(grid, grid), num_prefix_tokens=prefix)).eval()
    with torch.no_grad():
        mixer.positional_encoding.normal_()
    return mixer


def depthwise_conv_by_shifts(grid: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """'same' depth-wise convolution of [..., d, h, w] as a sum of shifted, zero-padded copies."""
    k = weight.shape[-1]
    h, w = grid.shape[-2:]
    padded = F.pad(grid, (k // 2, ) * 4)
    out = bias[:, None, None].expand_as(grid).clone()
    for dy in range(k):
        for dx in range(k):
            out = out + weight[:, 0, dy, dx, None, None] * padded[..., dy:dy + h, dx:dx + w]
    return out


@pytest.mark.parametrize('prefix', [0, 1])
def test_slab_equals_relu_attention_plus_depthwise_conv_on_values(prefix):
    grid = 4
    mixer, x = slab(grid, prefix), tokens(prefix + grid * grid)
    q, k, v = (t.reshape(B, -1, HEADS, C // HEADS).transpose(1, 2) for t in mixer.qkv(x).chunk(3, -1))
    k = k + mixer.positional_encoding.reshape(1, -1, HEADS, C // HEADS).transpose(1, 2)
    sim = F.relu(q) @ F.relu(k).transpose(-1, -2)  # B, heads, N, N: the O(N^2) form
    out = sim / (sim.sum(-1, keepdim=True) + 1e-6) @ v
    patches = v[:, :, prefix:].transpose(-1, -2).reshape(B, HEADS, C // HEADS, grid, grid)
    local = depthwise_conv_by_shifts(patches, mixer.dwc.weight, mixer.dwc.bias).flatten(-2).transpose(-1, -2)
    out = torch.cat([out[:, :, :prefix], out[:, :, prefix:] + local], dim=2)
    expected = mixer.proj(out.transpose(1, 2).reshape(B, -1, C))
    report(f'SLAB vs ReLU(Q)ReLU(K)^T V / norm + DWC(V) (prefix {prefix})', mixer(x, (grid, grid)), expected, 1e-5)


def test_slab_cost_is_linear_in_tokens():
    cfg = dict(type='SimplifiedLinearAttention')
    small, large = mixer_macs(cfg, 8, 0), mixer_macs(cfg, 16, 0)
    print(f'MACs for 4x the tokens: SLAB x{large / small:.2f}')
    assert large == 4 * small


def test_slab_position_encoding_resizes_with_the_resolution():
    src, dst = slab(grid=4), slab(grid=6)
    dst.load_state_dict(src.state_dict())
    assert dst.positional_encoding.shape == (1, 36, C)
    with pytest.raises(ValueError, match='valid input size'):
        src(tokens(36), (6, 6))


# ---------------------------------------------------------------- PRepBN

def prepbn(**kwargs) -> nn.Module:
    from mmcv.cnn import build_norm_layer
    norm = build_norm_layer(dict(type='PRepBN', **kwargs), C)[1]
    with torch.no_grad():  # non-trivial affine parameters and BN statistics
        for p in norm.parameters():
            p.normal_()
        norm.rep_bn.bn.running_mean.normal_()
        norm.rep_bn.bn.running_var.uniform_(0.5, 2.0)
    return norm


def test_prepbn_fades_from_layernorm_to_repbn_on_schedule():
    norm, x = prepbn(total_steps=4, warmup_steps=2, eps=1e-6), tokens(10)
    gammas = []
    for _ in range(8):
        gammas.append(norm.gamma.item())
        out = norm.train()(x)
        bn = F.batch_norm(x.reshape(-1, C), None, None, norm.rep_bn.bn.weight, norm.rep_bn.bn.bias,
                          training=True, eps=1e-5).reshape(x.shape) + norm.rep_bn.eta * x
        ln = F.layer_norm(x, (C, ), norm.layer_norm.weight, norm.layer_norm.bias, eps=1e-6)
        report(f'PRepBN at gamma {gammas[-1]:.2f}', out, gammas[-1] * ln + (1 - gammas[-1]) * bn, 1e-5)
    print(f'gamma per training step: {gammas}')
    assert gammas == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_prepbn_eval_is_batchnorm_only_and_fuses_to_an_affine():
    from mmeff.models.layers.reparam import switch_to_deploy
    norm, x = prepbn().eval(), tokens(10)
    bn = norm.rep_bn.bn
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias + norm.rep_bn.eta * x
    report('PRepBN eval vs BN(x) + eta x', norm(x), expected, 1e-5)
    switch_to_deploy(norm)
    report('PRepBN fused vs unfused', norm(x), expected, 1e-5)
    assert not hasattr(norm, 'layer_norm') and {n for n, _ in norm.named_parameters()} == {'scale', 'shift'}


def test_unknown_norm_lists_the_token_norms():
    from mmeff.models.layers.vit_blocks import build_token_norm
    with pytest.raises(KeyError, match='PRepBN'):
        build_token_norm(dict(type='PRepLN'), C, 1e-6)


def slab_vit(img_size: int, **prepbn_kwargs) -> nn.Module:
    from mmeff.registry import CLS_MODELS
    return CLS_MODELS.build(
        dict(type='ViTWithMixer', arch=dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0), img_size=img_size,
             with_cls_token=False, out_type='avg', mixer=dict(type='SimplifiedLinearAttention'),
             norm_cfg=dict(type='PRepBN', **prepbn_kwargs)))


def test_slab_vit_switches_to_batchnorm_by_the_configured_step():
    from mmeff.models.layers.prepbn import PRepBN
    model, x = slab_vit(32, total_steps=3, warmup_steps=1), torch.randn(2, 3, 32, 32)
    norms = [m for m in model.modules() if isinstance(m, PRepBN)]
    assert len(norms) == 2 * 2 + 1  # two per block and the final one
    model.train()
    for step in range(4):
        assert all(n.gamma.item() > 0 for n in norms), f'LayerNorm gone before step {step}'
        model(x)[0].sum().backward()
    assert all(n.gamma.item() == 0 for n in norms) and all(n.num_steps.item() == 4 for n in norms)
    # from now on LayerNorm has no effect, in training as in eval
    with torch.no_grad():
        before = model(x)[0]
        for n in norms:
            n.layer_norm.weight.mul_(3.0)
        report('SLAB-ViT after the schedule, LayerNorm x3', model(x)[0], before, 1e-5)


def test_slab_vit_eval_uses_batchnorm_only_and_fuses():
    from mmeff.models.layers.reparam import switch_to_deploy
    model, x = slab_vit(48, total_steps=100), torch.randn(2, 3, 48, 48)
    model.train()
    model(x)  # gamma still ~1: LayerNorm dominates training, BN statistics update
    model.eval()
    with torch.no_grad():
        before = model(x)[0]
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.mul_(3.0)
        report('SLAB-ViT eval, LayerNorm x3', model(x)[0], before, 1e-5)
        switch_to_deploy(model)
        assert not any(isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)) for m in model.modules())
        # the blocks' norms are folded into qkv and fc1; only the final one stays, as an affine
        assert all(isinstance(b.norm1, nn.Identity) and isinstance(b.norm2, nn.Identity) for b in model.blocks)
        report('SLAB-ViT fused vs unfused', model(x)[0], before, 1e-5)


def test_slab_demo_trains_through_the_schedule_with_mmengine_runner(tmp_path):
    """The step counter follows the runner's iterations; validation (eval mode) runs RepBN only."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmeff.models.layers.prepbn import PRepBN
    cfg = Config.fromfile(osp.join(osp.dirname(__file__), '..', 'configs', 'vit', 'slab', 'slab_tiny_p16_demo-64.py'))
    cfg.work_dir = str(tmp_path)
    cfg.model.backbone.norm_cfg.total_steps = 5
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, save_last=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    norms = [m for m in runner.model.modules() if isinstance(m, PRepBN)]
    steps = {n.num_steps.item() for n in norms}
    print(f'runner iterations {runner.iter}, PRepBN steps {steps}, gamma {norms[0].gamma.item()}')
    assert steps == {runner.iter} and runner.iter > 5 and all(n.gamma.item() == 0 for n in norms)
    assert 'val/accuracy/top1' in runner.message_hub.log_scalars
