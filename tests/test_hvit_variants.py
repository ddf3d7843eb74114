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


@pytest.mark.parametrize('config', CONFIGS)
def test_param_count_matches_readme(config):
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    try:
        with torch.device('meta'):  # counting needs no memory
            model = CLS_MODELS.build(cfg.model)
    except RuntimeError as e:  # MMPretrain's Swin/ResNet read drop-path rates with .item(): build for real
        if 'meta' not in str(e):
            raise
        model = CLS_MODELS.build(cfg.model)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == readme_table()[config], f'{config}: {count:,} parameters'
