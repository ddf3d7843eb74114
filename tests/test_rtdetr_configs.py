"""The RT-DETR configs: sizes vs. the official checkpoints, the recipe (optimizer groups, warm-up,
EMA), the batch-level multi-scale resize, the pre-flight error without COCO, and the mixing configs."""
import glob
import math
import os.path as osp

import pytest
import torch
from mmdet.models.layers import ExpMomentumEMA
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
from mmengine.structures import InstanceData

import mmeff  # noqa: F401  (registers the modules)
from mmeff.benchmark import Subject, count_ops
from mmeff.datasets import RTDETR_TRAIN_SIZES, DemoCocoDataset
from mmeff.registry import DET_MODELS

from conftest import REPO, RTDETR_KEYS_DIR, run_tool

# config -> official checkpoint key list (RT-DETRv2's for L/X: the v1 ones are Paddle checkpoints)
OFFICIAL = {
    'r18': 'rtdetr_r18vd_6x_coco',
    'r34': 'rtdetr_r34vd_6x_coco',
    'r50m': 'rtdetr_r50vd_m_6x_coco',
    'r50': 'rtdetr_r50vd_6x_coco',
    'r101': 'rtdetr_r101vd_6x_coco',
    'l': 'rtdetrv2_hgnetv2_l_6x_coco',
    'x': 'rtdetrv2_hgnetv2_x_6x_coco',
}
# the short config names users type (configs/rtdetr_<arch>.py) -> the full ones in configs/rtdetr/
CONFIGS = dict(r18='rtdetr/rtdetr_r18vd_4xb4-72e_coco', r34='rtdetr/rtdetr_r34vd_4xb4-72e_coco',
               r50m='rtdetr/rtdetr_r50vd-m_4xb4-72e_coco', r50='rtdetr/rtdetr_r50vd_4xb4-72e_coco',
               r101='rtdetr/rtdetr_r101vd_4xb4-72e_coco', l='rtdetr/rtdetr_hgnetv2-l_4xb4-72e_coco',
               x='rtdetr/rtdetr_hgnetv2-x_4xb4-72e_coco')
# Paper, Table 2 (millions of parameters; GFLOPs at 640x640, 2 FLOPs per multiply-add)
PAPER_PARAMS = dict(r18=20, r34=31, r50m=36, r50=42, r101=76, l=32, x=67)
PAPER_GFLOPS = dict(r18=60, r34=92, r50m=100, r50=136, r101=259, l=110, x=234)
# mmeff's count (README table): RepVGG unfused, the encoder's box head on the 300 selected tokens
MEASURED_GFLOPS = dict(r18=59.5, r34=91.7, r50m=98.6, r50=136.1, r101=258.9, l=110.0, x=234.3)
BN_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def load(name: str) -> Config:
    return Config.fromfile(f'{REPO}/configs/{name}.py')


@pytest.mark.parametrize('arch', list(OFFICIAL))
def test_short_config_names_are_the_full_configs(arch):
    short = load(f'rtdetr_{arch}')
    full = load(CONFIGS[arch])
    assert short.to_dict() == full.to_dict()
    assert sorted(glob.glob(f'{REPO}/configs/rtdetr_*.py')) == sorted(f'{REPO}/configs/rtdetr_{a}.py' for a in CONFIGS)


def official_numel(name: str) -> int:
    """Sum of the official state-dict shapes, without BN statistics and recomputed buffers.

    Excluded: ``decoder.anchors`` / ``decoder.valid_mask`` (mmeff recomputes them per input size),
    RT-DETRv2's ``num_points_scale`` (a constant buffer); the ``denoising_class_embed`` padding row
    (81 vs. mmeff's 80 rows) is subtracted. Frozen BN weight/bias are buffers on both sides.
    """
    path = RTDETR_KEYS_DIR / f'{name}.keys.txt'
    total = 0
    for line in path.read_text().splitlines():
        key, shape = line.split('\t')
        if key.split('.')[-1] in BN_STATS + ('num_points_scale', ) or key in ('decoder.anchors',
                                                                            'decoder.valid_mask'):
            continue
        if key == 'decoder.denoising_class_embed.weight':
            rows, dims = eval(shape)
            total -= dims  # the padding row
        total += math.prod(eval(shape))
    return total


@pytest.mark.parametrize('arch', list(OFFICIAL))
def test_config_builds_with_official_size(arch):
    cfg = load(CONFIGS[arch])
    model = DET_MODELS.build(cfg.model)
    numel = sum(v.numel() for k, v in model.state_dict().items() if k.split('.')[-1] not in BN_STATS)
    expected = official_numel(OFFICIAL[arch])
    trainable = sum(p.numel() for p in model.parameters())
    print(f'{arch}: {numel} weights (official {expected}), {trainable / 1e6:.1f}M parameters')
    assert numel == expected
    assert int(trainable / 1e6) == PAPER_PARAMS[arch]  # the paper truncates
    assert cfg.model.bbox_head.num_classes == 80
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert {h['type'] for h in cfg.custom_hooks} >= {'EMAHook', 'PipelineSwitchHook', 'NumClassCheckHook'}


@pytest.mark.parametrize('arch', list(OFFICIAL))
def test_flops_at_640_match_the_paper(arch):
    """GFLOPs of one 640x640 image: the README's numbers, within 2 % of the paper's. Deformable
    attention's ``grid_sample`` is resampling, counted with the elementwise ops, not as MACs."""
    subject = Subject(osp.join(REPO, f'configs/{CONFIGS[arch]}.py'), (640, 640))
    counts = count_ops(subject.infer_fn(1), subject.model)
    gflops = counts['flops'] / 1e9
    print(f'{arch}: {gflops:.2f} GFLOPs (paper {PAPER_GFLOPS[arch]}), MACs by op {counts["macs_by_op"]}')
    assert counts['flops'] == 2 * counts['macs']
    assert round(gflops, 1) == MEASURED_GFLOPS[arch]
    assert abs(gflops / PAPER_GFLOPS[arch] - 1) < 0.02
    assert set(counts['macs_by_op']) <= {'aten.convolution', 'aten.addmm', 'aten.mm',
                                         'aten._scaled_dot_product_flash_attention_for_cpu'}


def test_r50m_evaluates_at_decoder_layer_3():
    model = DET_MODELS.build(load('rtdetr_r50m').model)
    assert model.decoder.num_layers == 6 and model.num_eval_layers == 3
    assert DET_MODELS.build(load('rtdetr_r50').model).num_eval_layers == 6


@pytest.mark.parametrize('arch, backbone_lr', [('r18', 1e-5), ('r101', 1e-6)])
def test_optimizer_groups(arch, backbone_lr):
    """Backbone lr 1e-5 (R101 1e-6), other weights 1e-4 with decay 1e-4, no decay on any norm or
    bias (R18's backbone norms are trained: they are the case mmengine's default gets wrong)."""
    cfg = load(CONFIGS[arch])
    model = DET_MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
    norm_params = {id(p) for m in model.modules() if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                                                                    torch.nn.LayerNorm))
                   for p in m.parameters(recurse=False)}
    checked = dict(backbone_norm=0, norm=0, bias=0, weight=0)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = group_of[id(param)]
        expected_lr = backbone_lr if name.startswith('backbone.') else 1e-4
        no_decay = id(param) in norm_params or name.endswith('bias')
        assert math.isclose(group['lr'], expected_lr, rel_tol=1e-6), (name, group['lr'])
        assert group['weight_decay'] == (0 if no_decay else 1e-4), (name, group['weight_decay'])
        kind = ('backbone_norm' if name.startswith('backbone.') and id(param) in norm_params else
                'norm' if id(param) in norm_params else 'bias' if no_decay else 'weight')
        checked[kind] += 1
    print(f'{arch}: parameters checked per kind {checked}')
    assert all(checked[k] for k in ('norm', 'bias', 'weight'))
    assert (checked['backbone_norm'] > 0) == (arch == 'r18')  # R101's backbone norms are frozen
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_cfg.max_epochs == 72


def test_warmup_is_the_official_linear_warmup():
    """The lr factor at iteration t is (t + 1) / 2000 until 2000, as RT-DETRv2's LinearWarmup."""
    cfg = load('rtdetr_r50')
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = PARAM_SCHEDULERS.build(cfg.param_scheduler[0], default_args=dict(optimizer=optimizer))
    worst = 0.0
    for t in range(2100):
        official = 1e-4 * min(1.0, (t + 1) / 2000)
        worst = max(worst, abs(optimizer.param_groups[0]['lr'] - official) / official)
        scheduler.step()
    print(f'max relative lr difference to the official warm-up: {worst:.2e}')
    assert worst < 1e-6


def test_ema_matches_the_official_decay():
    """mmdet's ExpMomentumEMA(momentum=1e-4, gamma=2000) == official ModelEMA: at the n-th update
    (n >= 2; the first copies) ema = d * ema + (1 - d) * model with d = 0.9999 * (1 - exp(-n / 2000))."""
    cfg = next(h for h in load('rtdetr_r50').custom_hooks if h['type'] == 'EMAHook')
    model = torch.nn.Linear(1, 1, bias=False)
    ema = ExpMomentumEMA(model, momentum=cfg['momentum'], gamma=cfg['gamma'], update_buffers=True)
    worst = 0.0
    for n in range(1, 3001):
        model.weight.data.fill_(float(n))
        before = ema.module.weight.item()
        ema.update_parameters(model)
        if n >= 2 and n % 500 in (0, 2):
            d = 0.9999 * (1 - math.exp(-n / 2000))
            official = d * before + (1 - d) * n
            worst = max(worst, abs(ema.module.weight.item() - official) / abs(official))
    print(f'max relative EMA difference to the official formula: {worst:.2e}')
    assert worst < 1e-5


def _samples(shape, boxes):
    sample = DetDataSample(metainfo=dict(img_shape=shape, pad_shape=shape, batch_input_shape=shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                       labels=torch.zeros(len(boxes), dtype=torch.long))
    return sample


def test_batch_multiscale_draws_from_the_list_and_stops():
    cfg = load('rtdetr_r50')
    resize = DET_MODELS.build(cfg.model.data_preprocessor.batch_augments[0])
    hub = MessageHub.get_current_instance()
    hub.update_info('epoch', 0)
    sides = []
    for it in range(60):
        hub.update_info('iter', it)
        inputs, samples = resize(torch.zeros(2, 3, 64, 64), [_samples((64, 64), [[8., 16., 32., 48.]]) for _ in '01'])
        side = inputs.shape[-1]
        sides.append(side)
        assert inputs.shape[-2] == side
        box = samples[0].gt_instances.bboxes
        # the boxes follow the image (each call rescales from 64 to the current side)
        expected = torch.tensor([[8., 16., 32., 48.]]) * side / 64
        assert torch.allclose(box, expected), (box, expected)
    print('sides drawn:', sorted(set(sides)))
    assert set(sides[1:]) <= set(RTDETR_TRAIN_SIZES) and len(set(sides)) >= 5
    hub.update_info('epoch', cfg.stop_aug_epoch)
    inputs, _ = resize(torch.zeros(1, 3, 64, 64), [_samples((64, 64), [[8., 16., 32., 48.]])])
    assert inputs.shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match='sizes'):
        DET_MODELS.build(dict(type='BatchSyncChoiceResize', sizes=[]))


def test_train_without_coco_names_data_coco(tmp_path):
    if osp.isdir(osp.join(REPO, 'data', 'coco')):
        pytest.skip('COCO is present under data/coco')
    proc = run_tool('tools/train.py', 'configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py', '--work-dir', str(tmp_path),
                    check=False)
    assert proc.returncode != 0
    assert "data root 'data/coco/'" in proc.stderr, proc.stderr[-2000:]


def _tiny_batch(size, boxes_per_image):
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in boxes_per_image]
    samples = []
    for boxes in boxes_per_image:
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             scale_factor=(1.0, 1.0), img_id=0))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                           labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# Smaller than the configs (ResNet-18, no pretrained weights, 30 queries, no multi-scale) to stay fast.
SMALL_RESNET = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=(128, 256, 512)))


@pytest.mark.parametrize('config, overrides', [
    # score_thr 0: an untrained RetinaNet's scores lie below the config's 0.05
    ('mixing/retinanet_r50_hybrid-encoder_1x_coco', dict(SMALL_RESNET, test_cfg=dict(score_thr=0.0))),
    ('mixing/rtdetr_mmpretrain-resnet50_4xb4-72e_coco',
     dict(SMALL_RESNET, num_queries=30, data_preprocessor=dict(batch_augments=None))),
])
def test_mixing_config_trains_and_predicts(config, overrides):
    cfg = load(config)
    cfg.merge_from_dict(dict(model=overrides))
    torch.manual_seed(0)
    model = DET_MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    data = _tiny_batch(128, [[[10., 20., 70., 90.]], []])
    before = model.neck.state_dict()['input_proj.0.conv.weight'].clone()
    losses = model.train_step(data, optim_wrapper)
    change = (model.neck.state_dict()['input_proj.0.conv.weight'] - before).abs().max().item()
    print(f'{config}: losses {sorted(losses)[:4]}..., HybridEncoder weight change {change:.2e}')
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert change > 0
    model.eval()
    results = model.test_step(_tiny_batch(128, [[[10., 20., 70., 90.]]]))
    boxes = results[0].pred_instances.bboxes
    assert len(boxes) > 0 and boxes.min() >= 0 and boxes.max() <= 128


@pytest.mark.parametrize('pipeline', ['train_pipeline', 'train_pipeline_stage2'])
def test_paper_pipeline_on_images_with_and_without_boxes(pipeline):
    """The COCO pipelines (zoom-out, IoU crop, ...) on demo images: 640x640 out, boxes inside the
    image and at least 1 px wide, box-free images kept."""
    cfg = load('rtdetr_r50')
    dataset = DemoCocoDataset(split='train', filter_cfg=dict(filter_empty_gt=False), pipeline=cfg[pipeline],
                              indices=24)
    counts = []
    for i in range(len(dataset)):
        packed = dataset[i]
        boxes = packed['data_samples'].gt_instances.bboxes.tensor
        assert packed['inputs'].shape == (3, 640, 640)
        if len(boxes):
            assert boxes.min() >= 0 and boxes.max() <= 640
            assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
        counts.append(len(boxes))
    print(f'{pipeline}: boxes per image {counts}')
    assert 0 in counts and max(counts) > 0


def test_metafile_states_the_measured_size():
    """configs/rtdetr/metafile.yml (the model index) carries the params and GFLOPs asserted above."""
    import yaml
    models = {m['Name']: m for m in yaml.safe_load(open(f'{REPO}/configs/rtdetr/metafile.yml'))['Models']}
    assert set(models) == {osp.basename(c) for c in CONFIGS.values()}
    for arch, config in CONFIGS.items():
        metadata = models[osp.basename(config)]['Metadata']
        assert float(metadata['FLOPs'].rstrip('G')) == MEASURED_GFLOPS[arch]
        assert int(float(metadata['Parameters'].rstrip('M'))) == PAPER_PARAMS[arch]  # the paper truncates
