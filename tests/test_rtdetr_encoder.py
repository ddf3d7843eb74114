"""RT-DETR hybrid encoder (RepVGG / CSP-Rep layers, AIFI, CCFF, HybridEncoder), and every
official model's backbone + encoder checked key by key against the official checkpoint layout."""
import ast
import copy
import os

import pytest
import torch
import torch.nn as nn

import mmeff  # noqa: F401  (registers the modules)
from mmeff.converters.rename import rename
from mmeff.converters.rtdetr_official import BACKBONE_RULES, ENCODER_RULES
from mmeff.models.layers.repvgg import CSPRepLayer, RepVGGBlock
from mmeff.models.necks import aifi
from mmeff.models.necks.aifi import AIFI, sincos_position_embedding_2d
from mmeff.models.necks.ccff import CCFF
from mmeff.models.necks.hybrid_encoder import HybridEncoder
from mmeff.registry import DET_MODELS

from conftest import RTDETR_KEYS_DIR

FUSE_TOL = 1e-5  # float32, relative to the largest output
FUSE_TOL_FLOAT64 = 1e-10  # any error in the fusion formula shows far above this


def _randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so fusion is really tested."""
    from mmdet.models.layers import FrozenBatchNorm2d
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return module


def _calibrate_norms(module: nn.Module, inputs) -> nn.Module:
    """Set BN statistics to those of ``inputs`` (as after training), keeping activations O(1)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives exactly its statistics
    with torch.no_grad():
        module.train()(inputs)
    return module.eval()


def _check_deploy_equal(module: nn.Module, inputs) -> nn.Module:
    """Outputs before and after ``switch_to_deploy`` agree, in float64 and float32; returns the
    fused float32 copy."""
    for dtype, tol in ((torch.float64, FUSE_TOL_FLOAT64), (torch.float32, FUSE_TOL)):
        fused = copy.deepcopy(module).to(dtype).eval()
        x = inputs.to(dtype) if torch.is_tensor(inputs) else [t.to(dtype) for t in inputs]
        with torch.no_grad():
            ref = fused(x)
            fused.switch_to_deploy()
            out = fused(x)
        ref, out = (ref, ) if torch.is_tensor(ref) else ref, (out, ) if torch.is_tensor(out) else out
        diff = max((r - o).abs().max().item() for r, o in zip(ref, out))
        scale = max(r.abs().max().item() for r in ref)
        print(f'{type(module).__name__} {dtype}: fused vs unfused max abs diff {diff:.3e} '
              f'(outputs up to {scale:.2f})')
        assert diff < tol * max(1.0, scale)
    return fused


def test_repvgg_block_fuses_to_one_conv():
    block = _randomize_norms(RepVGGBlock(16, 16, act_cfg=dict(type='SiLU')))
    fused = _check_deploy_equal(block, torch.randn(2, 16, 9, 13))
    assert isinstance(fused.conv, nn.Conv2d) and fused.conv.kernel_size == (3, 3)
    assert not hasattr(fused, 'conv1') and not hasattr(fused, 'conv2')


@pytest.mark.parametrize('expansion,has_conv3', [(1.0, False), (0.5, True)])
def test_csp_rep_layer(expansion, has_conv3):
    layer = CSPRepLayer(64, 32, num_blocks=2, expansion=expansion)
    assert isinstance(layer.conv3, nn.Identity) != has_conv3
    assert layer.conv1.conv.out_channels == int(32 * expansion)
    assert len(layer.bottlenecks) == 2
    assert layer(torch.randn(1, 64, 5, 7)).shape == (1, 32, 5, 7)


def _pyramid(hidden, h, w, batch=2, requires_grad=False):
    """Three maps of a (h, w) image at strides 8, 16, 32, sized like the backbones' outputs."""
    sizes = [(-(-h // s), -(-w // s)) for s in (8, 16, 32)]
    return [torch.randn(batch, c, *hw, requires_grad=requires_grad)
            for c, hw in zip(hidden, sizes)]


def test_hybrid_encoder_fuses_with_unchanged_outputs():
    inputs = _pyramid((128, 256, 512), 96, 160)
    encoder = _calibrate_norms(_randomize_norms(HybridEncoder(arch='r18')), inputs)
    fused = _check_deploy_equal(encoder, inputs)
    blocks = [m for m in fused.modules() if isinstance(m, RepVGGBlock)]
    assert len(blocks) == 12 and all(b.deployed for b in blocks)


@pytest.mark.parametrize('image_hw', [(64, 64), (96, 160), (100, 72)])
def test_hybrid_encoder_shapes(image_hw):
    encoder = HybridEncoder(arch='r50m')
    inputs = _pyramid((512, 1024, 2048), *image_hw, batch=1)
    outs = encoder(inputs)
    assert [o.shape for o in outs] == [(1, 256, *x.shape[-2:]) for x in inputs]


def test_aifi_non_square_gradients_and_pass_through():
    neck = AIFI(hidden_dim=64, nhead=8, dim_feedforward=128)
    inputs = _pyramid((64, 64, 64), 96, 224, requires_grad=True)  # S5: 3 x 7
    outs = neck(inputs)
    assert [o.shape for o in outs] == [x.shape for x in inputs]
    assert outs[0] is inputs[0] and outs[1] is inputs[1]
    assert not torch.allclose(outs[2], inputs[2])
    outs[2].square().mean().backward()
    assert inputs[2].grad is not None and inputs[2].grad.abs().sum() > 0
    assert inputs[0].grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())


def test_aifi_position_embedding_layout_and_cache():
    h, w, c = 3, 5, 16
    pos = sincos_position_embedding_2d(h, w, c).reshape(h, w, c)
    # first half encodes the row only, second half the column only
    assert torch.equal(pos[:, :1, :c // 2].expand(h, w, c // 2), pos[..., :c // 2])
    assert torch.equal(pos[:1, :, c // 2:].expand(h, w, c // 2), pos[..., c // 2:])
    omega = 1. / 10000**(torch.arange(c // 4) / (c // 4))
    y, x = 2, 4
    expected = torch.cat([(y * omega).sin(), (y * omega).cos(), (x * omega).sin(), (x * omega).cos()])
    diff = (pos[y, x] - expected).abs().max().item()
    print(f'position embedding at (y={y}, x={x}) vs formula: max abs diff {diff:.3e}')
    assert diff < 1e-6
    # official layout (meshgrid(arange(W), arange(H)), flattened) on a square map
    n = 4
    grid_w, grid_h = torch.meshgrid(torch.arange(n, dtype=torch.float32),
                                    torch.arange(n, dtype=torch.float32), indexing='ij')
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    official = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], 1)
    diff = (sincos_position_embedding_2d(n, n, c)[0] - official).abs().max().item()
    print(f'square map: position embedding vs official layout max abs diff {diff:.3e}')
    assert diff < 1e-6

    neck = AIFI(hidden_dim=c, nhead=4, dim_feedforward=32)
    feat = torch.zeros(1, c, h, w)
    assert neck.position_embedding(h, w, feat) is neck.position_embedding(h, w, feat)
    assert neck.position_embedding(h, w, feat) is not neck.position_embedding(w, h, feat)
    assert neck.position_embedding(h, w, feat.double()).dtype == torch.float64


@pytest.mark.parametrize('image_hw', [(64, 64), (104, 72)])
def test_ccff_shapes_and_deploy(image_hw):
    inputs = _pyramid((32, 32, 32), *image_hw)
    neck = _calibrate_norms(_randomize_norms(CCFF(32, expansion=0.5, depth_mult=0.34)), inputs)
    assert len(neck.fpn_blocks[0].bottlenecks) == 1
    assert [o.shape for o in neck(inputs)] == [x.shape for x in inputs]
    _check_deploy_equal(neck, inputs)
    with pytest.raises(AssertionError, match='use HybridEncoder'):
        neck(_pyramid((64, 32, 32), *image_hw))


def test_config_errors_are_explicit():
    with pytest.raises(KeyError, match='arch must be one of'):
        HybridEncoder(arch='r152')
    with pytest.raises(AssertionError, match='use_encoder_idx'):
        HybridEncoder(arch='r18', use_encoder_idx=[3])
    encoder = HybridEncoder(arch='r18')
    with pytest.raises(AssertionError, match='out_indices'):
        encoder(_pyramid((128, 256), 64, 64))


@pytest.mark.parametrize('name', ['RepVGGBlock', 'CSPRepLayer', 'AIFILayer', 'AIFI', 'CCFF',
                                  'HybridEncoder'])
def test_registered_in_mmdet(name):
    module = {'RepVGGBlock': RepVGGBlock, 'CSPRepLayer': CSPRepLayer, 'AIFILayer': aifi.AIFILayer,
              'AIFI': AIFI, 'CCFF': CCFF, 'HybridEncoder': HybridEncoder}[name]
    assert DET_MODELS.get(name) is module


# --- official checkpoint layout -------------------------------------------------------------


# official checkpoint -> (backbone config, HybridEncoder arch)
OFFICIAL_MODELS = {
    'rtdetr_r18vd_6x_coco': (dict(type='PResNet', depth=18), 'r18'),
    'rtdetr_r34vd_6x_coco': (dict(type='PResNet', depth=34), 'r34'),
    'rtdetr_r50vd_m_6x_coco': (dict(type='PResNet', depth=50), 'r50m'),
    'rtdetr_r50vd_6x_coco': (dict(type='PResNet', depth=50), 'r50'),
    'rtdetr_r101vd_6x_coco': (dict(type='PResNet', depth=101), 'r101'),
    'rtdetrv2_r18vd_120e_coco': (dict(type='PResNet', depth=18), 'r18'),
    'rtdetrv2_r34vd_120e_coco': (dict(type='PResNet', depth=34), 'r34'),
    'rtdetrv2_r50vd_m_7x_coco': (dict(type='PResNet', depth=50), 'r50m'),
    'rtdetrv2_r50vd_6x_coco': (dict(type='PResNet', depth=50), 'r50'),
    'rtdetrv2_r101vd_6x_coco': (dict(type='PResNet', depth=101), 'r101'),
    'rtdetrv2_hgnetv2_l_6x_coco': (dict(type='HGNetv2', arch='L'), 'l'),
    'rtdetrv2_hgnetv2_x_6x_coco': (dict(type='HGNetv2', arch='X'), 'x'),
    'rtdetrv2_hgnetv2_h_6x_coco': (dict(type='HGNetv2', arch='H'), 'h'),
}


def _official_layout(name: str, prefix: str, rules) -> set:
    """{(mmeff name, shape)} of the official entries under ``prefix``, renamed by ``rules``."""
    layout = set()
    for line in (RTDETR_KEYS_DIR / f'{name}.keys.txt').read_text().splitlines():
        key, shape = line.split('\t')
        if key.startswith(prefix):
            layout.add((rename(key[len(prefix):], rules), tuple(ast.literal_eval(shape))))
    return layout


def _layout(module: nn.Module) -> set:
    return {(k, tuple(v.shape)) for k, v in module.state_dict().items()}


def _numel(layout: set) -> int:
    return sum(torch.Size(shape).numel() for _, shape in layout)


@pytest.mark.parametrize('name', sorted(OFFICIAL_MODELS))
def test_official_checkpoint_layout(name):
    """Every official backbone/encoder key maps to an entry of the same shape, and nothing else
    exists: parameters and buffers (BN statistics, num_batches_tracked) equal the official ones."""
    backbone_cfg, encoder_arch = OFFICIAL_MODELS[name]
    backbone = DET_MODELS.build(backbone_cfg)
    encoder = DET_MODELS.build(dict(type='HybridEncoder', arch=encoder_arch))
    for part, module, prefix, rules in [
        ('backbone', backbone, 'backbone.', BACKBONE_RULES[backbone_cfg['type']]),
        ('encoder', encoder, 'encoder.', ENCODER_RULES),
    ]:
        official, ours = _official_layout(name, prefix, rules), _layout(module)
        n_params = sum(p.numel() for p in module.parameters())
        print(f'{name} {part}: official {_numel(official)} numbers in {len(official)} entries, '
              f'mmeff {_numel(ours)} in {len(ours)} ({n_params} parameters)')
        assert ours == official, (f'{part}: missing {sorted(official - ours)[:5]}, '
                                  f'unexpected {sorted(ours - official)[:5]}')


@pytest.mark.parametrize('config', ['rtdetr_r18.py', 'rtdetr_l.py',
                                    pytest.param('rtdetr_r50.py', marks=pytest.mark.slow)])
def test_whole_detector_folds_batchnorm_with_unchanged_features(config, mmdet_scope):
    """``switch_to_deploy(fold_batchnorm=True)``: RepVGG fused, then every conv-BN pair folded.
    Compared on the features (backbone + encoder, where every conv is): the top-K query selection
    after them may swap near-tied random-weight queries on a 1e-7 change."""
    from mmdet.models.layers import FrozenBatchNorm2d
    from mmengine.config import Config

    from mmeff.models.layers.reparam import switch_to_deploy
    cfg = Config.fromfile(os.path.join(os.path.dirname(__file__), '..', 'configs', config))
    torch.manual_seed(0)
    model = _randomize_norms(DET_MODELS.build(cfg.model)).eval()
    images = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.extract_feat(images)
        switch_to_deploy(model, fold_batchnorm=True)
        actual = model.extract_feat(images)
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())
    diffs = [(a - e).abs().max().item() / e.abs().max().item() for a, e in zip(actual, expected)]
    print(f'{config}: max relative |feature diff| after folding = {max(diffs):.2e}')
    assert max(diffs) < FUSE_TOL


def test_fold_batchnorm_needs_eval_mode():
    from mmeff.models.layers.reparam import switch_to_deploy
    with pytest.raises(ValueError, match='model.eval'):
        switch_to_deploy(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), fold_batchnorm=True)
