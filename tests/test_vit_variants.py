"""Every ViT-family config: parameter count equal to the README table, and Ti forward/backward."""
import glob
import os
import re

import pytest
import torch
from mmengine.config import Config

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.registry import CLS_MODELS

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs', 'vit')
ROW = re.compile(r'^\| \[(?P<name>[^\]]+)\]\((?P<path>[^)]+)\) \|.*\| (?P<params>[\d,]+) \|$')


def readme_table() -> dict:
    with open(os.path.join(CONFIG_DIR, 'README.md')) as f:
        rows = (ROW.match(line.strip()) for line in f)
        return {m['path']: int(m['params'].replace(',', '')) for m in rows if m}


CONFIGS = sorted(os.path.relpath(p, CONFIG_DIR) for p in glob.glob(os.path.join(CONFIG_DIR, '*', '*_in1k-224.py')))
TINY = [c for c in CONFIGS if '_tiny_' in c or '_xxs24_' in c]


def test_readme_lists_every_config():
    assert sorted(readme_table()) == CONFIGS


def param_count(config: str) -> int:
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    with torch.device('meta'):  # counting needs no memory (Switch-B has 483 M parameters)
        model = CLS_MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('config', CONFIGS)
def test_param_count_matches_readme(config):
    count = param_count(config)
    assert count == readme_table()[config], f'{config}: {count:,} parameters'


def deit3_vit_params(dim: int, depth: int = 12, patch: int = 16, img: int = 224, classes: int = 1000) -> int:
    """Parameters of the README's baseline ViT, counted by hand: DeiT III's skeleton (class token
    without position embedding, LayerScale, qkv bias, MLP ratio 4), a LayerNorm at the end, a
    linear 1000-class head."""
    patch_embed = 3 * patch * patch * dim + dim  # conv weight + bias
    pos_embed, cls_token = (img // patch)**2 * dim, dim
    block = (2 * dim  # norm1
             + 3 * dim * dim + 3 * dim  # qkv
             + dim * dim + dim  # attention projection
             + dim  # LayerScale 1
             + 2 * dim  # norm2
             + dim * 4 * dim + 4 * dim + 4 * dim * dim + dim  # MLP fc1, fc2
             + dim)  # LayerScale 2
    return patch_embed + pos_embed + cls_token + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize('config, dim', [('vit/vit_tiny_p16_in1k-224.py', 192),
                                         ('vit/vit_small_p16_in1k-224.py', 384),
                                         ('vit/vit_base_p16_in1k-224.py', 768)])
def test_baseline_param_count_equals_formula(config, dim):
    """The baselines' counts from the architecture, not from the code that generated the README."""
    expected = deit3_vit_params(dim)
    print(f'{config}: {expected:,} by formula')
    assert param_count(config) == expected == readme_table()[config]


def forward_backward(config: str, img_size: int) -> None:
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    cfg.model.backbone.img_size = img_size
    model = CLS_MODELS.build(cfg.model).train()  # PyTorch's default init: init_weights is slow here
    logits = model(torch.randn(1, 3, img_size, img_size), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    assert grads and torch.isfinite(torch.cat(grads)).all()


# Two small valid sizes in the default suite (every model takes any multiple of 16 when built for
# it); the paper's 224 px in the slow suite.
@pytest.mark.parametrize('img_size', [64, 96])
@pytest.mark.parametrize('config', TINY)
def test_tiny_forward_backward(config, img_size):
    forward_backward(config, img_size)


@pytest.mark.slow
@pytest.mark.parametrize('config', TINY)
def test_tiny_forward_backward_224(config):
    forward_backward(config, 224)


def test_recipe_pipelines_run():
    import numpy as np
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import TRANSFORMS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, '_base_', 'wttf_in1k_224.py'))
    image = np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)
    for pipeline in (cfg.train_pipeline, cfg.test_pipeline):
        transform = Compose([TRANSFORMS.build(t) for t in pipeline[1:]])  # after LoadImageFromFile
        for _ in range(4):  # 3-Augment picks one of three branches at random
            assert transform(dict(img=image.copy(), gt_label=1))['inputs'].shape == (3, 224, 224)
