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


def test_model_index_covers_every_config():
    """mim's index: model-index.yml imports every metafile, and every model config of a folder (not
    demos, deploy configs or the short aliases at the top) is a model of exactly one metafile."""
    index = yaml.safe_load(open(f'{REPO}/model-index.yml'))
    metafiles = sorted(osp.relpath(p, REPO) for p in glob.glob(f'{REPO}/configs/*/metafile.yml'))
    assert sorted(index['Import']) == metafiles
    indexed = [model['Config'] for path in metafiles for model in yaml.safe_load(open(f'{REPO}/{path}'))['Models']]
    assert len(indexed) == len(set(indexed)), 'a config is indexed twice'
    configs = {f'configs/{c}' for c in CONFIGS
               if '/' in c and not c.startswith('deploy/') and not re.search(r'_demo-\d+\.py$', c)}
    assert configs == set(indexed), (sorted(configs - set(indexed)), sorted(set(indexed) - configs))


def test_metafiles_are_up_to_date_with_the_readmes():
    """tools/analysis/metafiles.py regenerates them from the README tables: nothing changes."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('metafiles', f'{REPO}/tools/analysis/metafiles.py')
    metafiles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metafiles)
    for folder in ('vit', 'hvit'):
        written = yaml.safe_load(open(f'{REPO}/configs/{folder}/metafile.yml'))
        assert metafiles.classification_metafile(folder) == written, f'run tools/analysis/metafiles.py ({folder})'
    vit = {m['Name']: m for m in yaml.safe_load(open(f'{REPO}/configs/vit/metafile.yml'))['Models']}
    assert vit['vit_small_p16_in1k-224']['Results'][0]['Metrics']['Top 1 Accuracy'] == 82.54  # the paper's


def test_mim_finds_the_index_in_the_installed_package():
    """What setup.py's mim extension provides (mmeff/.mim, as mmdet's): mim reads <package>/.mim/model-index.yml."""
    import mmeff
    mim_dir = osp.join(osp.dirname(mmeff.__file__), '.mim')
    for name in ('model-index.yml', 'configs', 'tools', 'demo'):
        assert osp.exists(osp.join(mim_dir, name)), f'{mim_dir}/{name}: reinstall mmeff (pip install -e .)'
    assert osp.samefile(osp.join(mim_dir, 'model-index.yml'), f'{REPO}/model-index.yml')


def test_a_wheel_carries_the_mim_extension(tmp_path):
    """`pip install .` (a wheel) copies tools, configs, demo and the index into mmeff/.mim, where mim's
    `search`, `train` and `test` look (an editable install links them; mim itself finds those only
    in site-packages). Built from a copy of the tracked files: the copy mode must not touch this checkout."""
    import subprocess
    import sys
    import zipfile
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / 'src'
    for name in files:
        if osp.isfile(osp.join(REPO, name)):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(open(osp.join(REPO, name), 'rb').read())
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w',
                    str(tmp_path / 'dist'), str(src)], check=True, capture_output=True)
    [wheel] = glob.glob(str(tmp_path / 'dist' / '*.whl'))
    packaged = {n[len('mmeff/.mim/'):] for n in zipfile.ZipFile(wheel).namelist() if n.startswith('mmeff/.mim/')}
    expected = {n for n in files if n.split('/')[0] in ('configs', 'tools', 'demo') or n == 'model-index.yml'}
    assert expected and expected <= packaged, sorted(expected - packaged)[:5]
