"""RT-DETR deformable attention (grid_sample) and decoder."""
import math

import pytest
import torch

from mmeff.models.layers.ms_deform_attn import RTDETRMSDeformableAttention, ms_deform_attn_grid_sample
from mmeff.models.layers.rtdetr_decoder import RTDETRDecoderLayer, RTDETRTransformerDecoder


def naive_ms_deform_attn(value, spatial_shapes, locations, weights):
    """Bilinear sampling by explicit loops; pixel centres at (i + 0.5) / size, zeros outside."""
    batch_size, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = locations.shape
    starts = [0]
    for h, w in spatial_shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch_size, num_queries, num_heads, head_dims, dtype=value.dtype)
    for b in range(batch_size):
        for q in range(num_queries):
            for m in range(num_heads):
                for lvl, (h, w) in enumerate(spatial_shapes):
                    for p in range(num_points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < w and 0 <= yi < h:
                                bilinear = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                v = value[b, starts[lvl] + yi * w + xi, m]
                                out[b, q, m] += weights[b, q, m, lvl, p] * bilinear * v
    return out.flatten(2)


def test_grid_sample_attention_matches_naive_bilinear():
    torch.manual_seed(0)
    spatial_shapes = [(4, 5), (2, 3), (1, 2)]
    num_tokens = sum(h * w for h, w in spatial_shapes)
    value = torch.randn(2, num_tokens, 2, 3, dtype=torch.float64)
    # Some locations fall outside [0, 1] to exercise the zero padding.
    locations = torch.rand(2, 4, 2, 3, 2, 2, dtype=torch.float64) * 1.3 - 0.15
    weights = torch.rand(2, 4, 2, 3, 2, dtype=torch.float64)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    ours = ms_deform_attn_grid_sample(value, spatial_shapes, locations, weights)
    ref = naive_ms_deform_attn(value, spatial_shapes, locations, weights)
    diff = (ours - ref).abs().max().item()
    print(f'grid_sample vs naive bilinear: max abs diff {diff:.3e}')
    assert ours.shape == (2, 4, 6)
    assert diff < 1e-5


def test_grid_sample_attention_matches_mmcv_pytorch_reference():
    mmcv_msda = pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    torch.manual_seed(1)
    spatial_shapes = [(6, 4), (3, 2), (2, 1)]
    value = torch.randn(1, sum(h * w for h, w in spatial_shapes), 8, 4)
    locations = torch.rand(1, 7, 8, 3, 4, 2)
    weights = torch.rand(1, 7, 8, 3, 4).softmax(-1)
    ours = ms_deform_attn_grid_sample(value, spatial_shapes, locations, weights)
    ref = mmcv_msda.multi_scale_deformable_attn_pytorch(value, torch.tensor(spatial_shapes),
                                                         locations, weights)
    diff = (ours - ref).abs().max().item()
    print(f'grid_sample vs mmcv multi_scale_deformable_attn_pytorch: max abs diff {diff:.3e}')
    assert diff < 1e-5


def test_deformable_attention_official_shapes_and_output():
    attn = RTDETRMSDeformableAttention(embed_dims=256, num_heads=8, num_levels=3, num_points=4)
    shapes = {name: tuple(p.shape) for name, p in attn.named_parameters()}
    assert shapes['sampling_offsets.weight'] == (192, 256)
    assert shapes['attention_weights.weight'] == (96, 256)
    assert shapes['value_proj.weight'] == (256, 256)
    assert shapes['output_proj.weight'] == (256, 256)
    spatial_shapes = [(4, 4), (2, 2), (1, 1)]
    query = torch.randn(2, 5, 256)
    boxes = torch.rand(2, 5, 4) * 0.5 + 0.25
    value = torch.randn(2, 21, 256)
    out = attn(query, boxes, value, spatial_shapes)
    assert out.shape == (2, 5, 256)
    with pytest.raises(ValueError, match='num_levels'):
        attn(query, boxes, value[:, :20], spatial_shapes[:2])


def test_decoder_shapes_and_detached_refinement():
    torch.manual_seed(0)
    embed_dims, num_layers = 32, 3
    decoder = RTDETRTransformerDecoder(
        num_layers=num_layers, embed_dims=embed_dims,
        layer_cfg=dict(num_heads=4, feedforward_channels=64, num_levels=2, num_points=2))
    decoder.init_weights()
    reg_branches = torch.nn.ModuleList(
        torch.nn.Sequential(torch.nn.Linear(embed_dims, 4)) for _ in range(num_layers))
    spatial_shapes = [(4, 6), (2, 3)]
    query = torch.randn(2, 7, embed_dims)
    memory = torch.randn(2, 30, embed_dims)
    boxes = torch.rand(2, 7, 4) * 0.5 + 0.25
    ratios = torch.ones(2, 2)
    hidden, refs = decoder(query, memory, boxes, spatial_shapes, ratios, reg_branches)
    assert hidden.shape == (num_layers, 2, 7, embed_dims)
    assert len(refs) == num_layers and all(r.shape == (2, 7, 4) for r in refs)
    assert torch.equal(refs[0], boxes)
    # references[1] carries the gradient of layer 0's box (look forward twice).
    assert refs[1].requires_grad
    hidden_2, refs_2 = decoder(query, memory, boxes, spatial_shapes, ratios, reg_branches,
                               num_layers_to_run=2)
    diff = (hidden_2 - hidden[:2]).abs().max().item()
    print(f'decoder stopped after 2 layers vs full, first 2 layers: max abs diff {diff:.3e}')
    assert hidden_2.shape[0] == 2 and len(refs_2) == 2 and diff < 1e-6


def test_decoder_layer_official_parameter_names():
    layer = RTDETRDecoderLayer()
    names = {name for name, _ in layer.named_parameters()}
    expected = {
        'self_attn.in_proj_weight', 'self_attn.in_proj_bias', 'self_attn.out_proj.weight',
        'self_attn.out_proj.bias', 'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias',
        'norm3.weight', 'norm3.bias', 'linear1.weight', 'linear1.bias', 'linear2.weight',
        'linear2.bias'
    } | {f'cross_attn.{m}.{p}' for m in ('sampling_offsets', 'attention_weights', 'value_proj',
                                          'output_proj') for p in ('weight', 'bias')}
    assert names == expected
