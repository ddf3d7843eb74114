"""Every hierarchical/hybrid config (configs/hvit): listed in its README, parameter count as listed."""
import glob
import os
import re

import pytest
import torch
from mmengine.config import Config

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.registry import CLS_MODELS

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs', 'hvit')
ROW = re.compile(r'^\| \[(?P<name>[^\]]+)\]\((?P<path>[^)]+)\) \|.*\| (?P<params>[\d,]+) \|$')
CONFIGS = sorted(os.path.relpath(p, CONFIG_DIR) for p in glob.glob(os.path.join(CONFIG_DIR, '*', '*_in1k-224.py')))


def readme_table() -> dict:
    with open(os.path.join(CONFIG_DIR, 'README.md')) as f:
        rows = (ROW.match(line.strip()) for line in f)
        return {m['path']: int(m['params'].replace(',', '')) for m in rows if m}


def test_readme_lists_every_config():
    assert sorted(readme_table()) == CONFIGS


def param_count(config: str) -> int:
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    try:
        with torch.device('meta'):  # counting needs no memory
            model = CLS_MODELS.build(cfg.model)
    except RuntimeError as e:  # MMPretrain's Swin/ResNet read drop-path rates with .item(): build for real
        if 'meta' not in str(e):
            raise
        model = CLS_MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('config', CONFIGS)
def test_param_count_matches_readme(config):
    count = param_count(config)
    assert count == readme_table()[config], f'{config}: {count:,} parameters'


def resnet_params(bottleneck: bool, blocks_per_stage, width: int = 1, classes: int = 1000) -> int:
    """Parameters of He et al.'s ResNet (ImageNet, torchvision/MMPretrain layout), counted by hand:
    bias-free convolutions, a BN (weight and bias) after each, a 1x1 conv + BN shortcut where the
    shape changes, a linear head. ``width``: the bottleneck's inner width factor (Wide ResNet-50-2: 2)."""
    def conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out

    total, channels = conv_bn(3, 64, 7), 64  # stem (the max pool has no parameters)
    for stage, num_blocks in enumerate(blocks_per_stage):
        base = 64 * 2**stage
        out = 4 * base if bottleneck else base
        for _ in range(num_blocks):
            if bottleneck:
                mid = base * width
                total += conv_bn(channels, mid, 1) + conv_bn(mid, mid, 3) + conv_bn(mid, out, 1)
            else:
                total += conv_bn(channels, out, 3) + conv_bn(out, out, 3)
            if channels != out:  # a stage's first block (which also strides in stages 2-4)
                total += conv_bn(channels, out, 1)
            channels = out
    return total + channels * classes + classes


@pytest.mark.parametrize('config, bottleneck, blocks, width', [
    ('resnet/resnet18_in1k-224.py', False, (2, 2, 2, 2), 1),
    ('resnet/resnet34_in1k-224.py', False, (3, 4, 6, 3), 1),
    ('resnet/resnet50_in1k-224.py', True, (3, 4, 6, 3), 1),
    ('resnet/resnet101_in1k-224.py', True, (3, 4, 23, 3), 1),
    ('resnet/wide_resnet50_2_in1k-224.py', True, (3, 4, 6, 3), 2),
])
def test_resnet_baseline_param_count_equals_formula(config, bottleneck, blocks, width):
    """The convolutional baselines' counts from the architecture, not from the code that generated
    the README (ResNet-50: the well-known 25,557,032)."""
    expected = resnet_params(bottleneck, blocks, width)
    print(f'{config}: {expected:,} by formula')
    assert param_count(config) == expected == readme_table()[config]
