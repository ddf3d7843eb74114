"""The configs' layout (README "Models and configs"): one demo naming convention, model-index metafiles that
point at real configs, and the short RT-DETR names as aliases only."""
import glob
import os.path as osp
import re

import yaml

from conftest import REPO

CONFIGS = sorted(osp.relpath(p, f'{REPO}/configs') for p in glob.glob(f'{REPO}/configs/**/*.py', recursive=True)
                 if '/_base_/' not in p)


def test_demo_configs_follow_one_convention():
    demos = [c for c in CONFIGS if 'demo' in osp.basename(c)]
    assert len(demos) > 20
    misnamed = [c for c in demos if not re.fullmatch(r'[\w.-]+_demo-\d+\.py', osp.basename(c))]
    assert not misnamed, f'demo configs are named <model>_demo-<img size>.py: {misnamed}'
    assert not [c for c in demos if '/demo/' in c or c.startswith('demo/')], 'a demo config sits beside its model'


def test_only_the_short_rtdetr_aliases_sit_at_the_root():
    root = [c for c in CONFIGS if '/' not in c]
    assert root and all(re.fullmatch(r'rtdetr_\w+\.py', c) for c in root), root
    for name in root:
        code = [line for line in open(f'{REPO}/configs/{name}').read().splitlines() if not line.startswith('#')]
        target = re.fullmatch(r"_base_ = \['\./(rtdetr/[\w.-]+\.py)'\]", code[0])
        assert len(code) == 1 and target and osp.isfile(f'{REPO}/configs/{target[1]}'), name


def test_metafiles_point_at_existing_configs():
    metafiles = glob.glob(f'{REPO}/configs/*/metafile.yml')
    assert metafiles
    for path in metafiles:
        meta = yaml.safe_load(open(path))
        collections = {c['Name'] for c in meta['Collections']}
        for collection in meta['Collections']:
            assert osp.isfile(osp.join(REPO, collection['README']))
        for model in meta['Models']:
            assert model['In Collection'] in collections
            assert osp.isfile(osp.join(REPO, model['Config'])), model['Config']
            assert osp.basename(model['Config']) == model['Name'] + '.py'
