"""Official RT-DETR checkpoints -> mmeff: every key of every official model (v1 and v2, all sizes)
converts and loads strictly into the mmeff model of that size; unknown keys stop the tool."""
import ast
import copy
import os.path as osp

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmeff  # noqa: F401  (registers the modules)
from mmeff.converters.rtdetr_official import (
    UnmappedKeysError,
    compare_with_model,
    convert_state_dict,
    detect_version,
    extract_state_dict,
)
from mmeff.registry import DET_MODELS

from conftest import REPO, RTDETR_KEYS_DIR, run_tool

R50_MODEL = dict(
    type='RTDETR', num_queries=300, feat_channels=(256, 256, 256),
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='PResNet', depth=50, out_indices=(1, 2, 3)),
    neck=dict(type='HybridEncoder', arch='r50'),
    decoder=dict(type='RTDETRTransformerDecoder', num_layers=6, embed_dims=256,
                 layer_cfg=dict(num_heads=8, feedforward_channels=1024, dropout=0.0, num_levels=3,
                                num_points=4)),
    bbox_head=dict(type='RTDETRHead', num_classes=80, embed_dims=256),
    train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
        dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0),
        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
        dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
    test_cfg=dict(max_per_img=300, eval_idx=-1))

# size -> (backbone, neck arch, neck channels, decoder layers, official checkpoints of that size)
SIZES = {
    'r18': (dict(type='PResNet', depth=18), 'r18', 256, 3,
            ['rtdetr_r18vd_6x_coco', 'rtdetrv2_r18vd_120e_coco']),
    'r34': (dict(type='PResNet', depth=34), 'r34', 256, 4,
            ['rtdetr_r34vd_6x_coco', 'rtdetrv2_r34vd_120e_coco']),
    'r50m': (dict(type='PResNet', depth=50), 'r50m', 256, 6,
             ['rtdetr_r50vd_m_6x_coco', 'rtdetrv2_r50vd_m_7x_coco']),
    'r50': (dict(type='PResNet', depth=50), 'r50', 256, 6,
            ['rtdetr_r50vd_6x_coco', 'rtdetrv2_r50vd_6x_coco']),
    'r101': (dict(type='PResNet', depth=101), 'r101', 384, 6,
             ['rtdetr_r101vd_6x_coco', 'rtdetrv2_r101vd_6x_coco']),
    'l': (dict(type='HGNetv2', arch='L'), 'l', 256, 6, ['rtdetrv2_hgnetv2_l_6x_coco']),
    'x': (dict(type='HGNetv2', arch='X'), 'x', 384, 6, ['rtdetrv2_hgnetv2_x_6x_coco']),
    'h': (dict(type='HGNetv2', arch='H'), 'h', 512, 6, ['rtdetrv2_hgnetv2_h_6x_coco']),
}


def model_cfg(size: str) -> dict:
    backbone, arch, channels, num_layers, _ = SIZES[size]
    cfg = copy.deepcopy(R50_MODEL)
    cfg.update(backbone=dict(backbone, out_indices=(1, 2, 3)),
               neck=dict(type='HybridEncoder', arch=arch), feat_channels=(channels, ) * 3)
    cfg['decoder']['num_layers'] = num_layers
    return cfg


def build_model(size: str):
    init_default_scope('mmdet')
    return DET_MODELS.build(model_cfg(size))


def synthetic_official(name: str, seed: int = 0) -> dict:
    """Random tensors with the official names and shapes; what the real ones hold where the
    converter looks at values (integer BN counters, v2's point scales 1/4)."""
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for line in (RTDETR_KEYS_DIR / f'{name}.keys.txt').read_text().splitlines():
        key, shape = line.split('\t')
        shape = ast.literal_eval(shape)
        if key.endswith('num_batches_tracked'):
            state_dict[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith('num_points_scale'):
            state_dict[key] = torch.full(shape, 0.25)
        else:
            state_dict[key] = torch.randn(shape, generator=gen)
    return state_dict


def test_every_reference_list_is_covered():
    listed = {p.name[:-len('.keys.txt')] for p in RTDETR_KEYS_DIR.glob('*.keys.txt')}
    covered = {name for *_, names in SIZES.values() for name in names}
    assert listed == covered, f'not covered: {sorted(listed - covered)}'


@pytest.mark.parametrize('size', list(SIZES))
def test_convert_and_load_strict(size):
    """Convert the v1 and v2 key lists of one size; the model loads them with strict=True, every
    tensor lands where expected (values compared), nothing is left over."""
    model = build_model(size)
    for name in SIZES[size][-1]:
        official = synthetic_official(name)
        converted, dropped = convert_state_dict(official)
        diff = compare_with_model(converted, model.state_dict())
        print(f'{name} ({detect_version(official)}): {len(official)} official keys -> '
              f'{len(converted)} mmeff, dropped {len(dropped)}; differences {diff}')
        assert diff == dict(missing=[], unexpected=[], shape_mismatch=[])
        model.load_state_dict(converted, strict=True)
        loaded = model.state_dict()
        # Spot-check values across the three parts, including the two re-indexed heads.
        num_layers = SIZES[size][3]
        for official_key, mmeff_key in [
            ('decoder.enc_bbox_head.layers.2.weight', f'bbox_head.reg_branches.{num_layers}.4.weight'),
            ('decoder.dec_bbox_head.0.layers.1.bias', 'bbox_head.reg_branches.0.2.bias'),
            ('decoder.enc_score_head.bias', f'bbox_head.cls_branches.{num_layers}.bias'),
            ('encoder.encoder.0.layers.0.linear1.weight', 'neck.aifi.layers.0.0.linear1.weight'),
        ]:
            assert torch.equal(loaded[mmeff_key], official[official_key]), mmeff_key
        assert torch.equal(loaded['dn_query_generator.label_embedding.weight'],
                           official['decoder.denoising_class_embed.weight'][:80])
        assert all(k in official for k in dropped)


def test_checkpoint_layouts_and_version():
    official = synthetic_official('rtdetrv2_r18vd_120e_coco')
    assert detect_version(official) == 'v2'
    assert detect_version(synthetic_official('rtdetr_r18vd_6x_coco')) == 'v1'
    for wrapped in ({'ema': {'module': official, 'updates': 5}, 'model': {}}, {'model': official},
                    official):
        assert extract_state_dict(wrapped).keys() == official.keys()
    with pytest.raises(ValueError, match='Not an official RT-DETR checkpoint'):
        extract_state_dict({'epoch': 3, 'optimizer': {}})


def test_unknown_keys_are_listed():
    official = synthetic_official('rtdetr_r18vd_6x_coco')
    official['decoder.extra_head.weight'] = torch.zeros(3)
    official['teacher.fc.weight'] = torch.zeros(3)
    with pytest.raises(UnmappedKeysError) as info:
        convert_state_dict(official)
    assert info.value.keys == ['decoder.extra_head.weight', 'teacher.fc.weight']


def test_v2_per_level_point_counts_are_refused():
    official = synthetic_official('rtdetrv2_r18vd_120e_coco')
    # num_points=[3, 4, 5] on the three levels: 12 entries, but not all 1/4.
    official['decoder.decoder.layers.0.cross_attn.num_points_scale'] = torch.tensor(
        [1 / 3] * 3 + [1 / 4] * 4 + [1 / 5] * 5)
    with pytest.raises(ValueError, match='different number of points per level'):
        convert_state_dict(official)


@pytest.fixture(scope='module')
def r18_files(tmp_path_factory):
    """An official-style v2 R18 checkpoint (EMA layout) and the matching/mismatching configs."""
    tmp = tmp_path_factory.mktemp('convert')
    official = synthetic_official('rtdetrv2_r18vd_120e_coco')
    torch.save({'ema': {'module': official, 'updates': 1}, 'model': {}}, tmp / 'official.pth')
    for size in ('r18', 'r34'):
        (tmp / f'{size}.py').write_text(f'default_scope = "mmdet"\nmodel = {model_cfg(size)!r}\n')
    return tmp, official


def test_cli_converts_and_mmengine_loads_weights_only(r18_files):
    tmp, official = r18_files
    dst = tmp / 'mmeff.pth'
    proc = run_tool('tools/convert_rtdetr_official.py', str(tmp / 'official.pth'), str(dst),
                    '--config', str(tmp / 'r18.py'))
    print(proc.stdout)
    assert 'matches' in proc.stdout
    # Only tensors and plain containers: the safe loader accepts it.
    checkpoint = torch.load(dst, weights_only=True)
    assert checkpoint['meta']['official_version'] == 'v2'
    model = build_model('r18')
    load_checkpoint(model, str(dst), strict=True)  # mmengine's loader, as load_from uses it
    assert torch.equal(model.state_dict()['backbone.conv1.conv1_1.conv.weight'],
                       official['backbone.conv1.conv1_1.conv.weight'])


def test_cli_stops_on_unknown_key(r18_files):
    tmp, official = r18_files
    src, dst = tmp / 'extra.pth', tmp / 'extra_out.pth'
    torch.save({'model': dict(official, **{'decoder.extra_head.weight': torch.zeros(2)})}, src)
    proc = run_tool('tools/convert_rtdetr_official.py', str(src), str(dst), check=False)
    assert proc.returncode != 0 and not dst.exists()
    assert 'decoder.extra_head.weight' in proc.stderr, proc.stderr


def test_cli_stops_on_wrong_config(r18_files):
    tmp, _ = r18_files
    dst = tmp / 'wrong.pth'
    proc = run_tool('tools/convert_rtdetr_official.py', str(tmp / 'official.pth'), str(dst),
                    '--config', str(tmp / 'r34.py'), check=False)
    print(proc.stderr)
    assert proc.returncode != 0 and not dst.exists()
    # R34 has a 4th decoder layer and more backbone blocks than the R18 weights.
    assert 'missing' in proc.stderr and 'decoder.layers.3.norm1.weight' in proc.stderr


def test_cli_checks_an_official_release_file_against_its_config(r18_files, tmp_path):
    """A file named as the official release is checked against the config of its architecture."""
    tmp, official = r18_files
    src = tmp_path / 'rtdetrv2_r18vd_120e_coco.pth'
    src.write_bytes((tmp / 'official.pth').read_bytes())
    proc = run_tool('tools/convert_rtdetr_official.py', str(src), str(tmp_path / 'out.pth'))
    assert 'official release of configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py' in proc.stdout
    assert 'matches' in proc.stdout, proc.stdout
    wrong = tmp_path / 'rtdetrv2_r34vd_120e_coco_ema.pth'  # R18 weights under R34's release name
    wrong.write_bytes(src.read_bytes())
    proc = run_tool('tools/convert_rtdetr_official.py', str(wrong), str(tmp_path / 'wrong.pth'), check=False)
    assert proc.returncode != 0 and 'do not fit' in proc.stderr


def test_every_official_release_names_an_existing_config():
    import importlib.util
    spec = importlib.util.spec_from_file_location('convert', osp.join(REPO, 'tools/convert_rtdetr_official.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for name, config in tool.RELEASES.items():
        assert osp.exists(osp.join(REPO, config)), (name, config)
    proc = run_tool('tools/convert_rtdetr_official.py', '--list')
    assert len(proc.stdout.splitlines()) == len(tool.RELEASES) and tool.RELEASE_URL in proc.stdout
