"""Efficient-ViT backbones for detection (configs/rtdetr_vit): ViTWithMixer's feature-map output, ViTDet's simple
feature pyramid, every config builds and gives the levels its head expects, and the demo variants train a few
iterations and predict in mmdet's format (RT-DETR and a stock mmdet RetinaNet)."""
import glob
import math
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmeff  # noqa: F401  (registers the modules)
from mmeff.engine.optimizers import NORM_LAYERS
from mmeff.registry import CLS_MODELS, DET_DATASETS, DET_MODELS

from conftest import REPO, run_tool

CONFIG_DIR = osp.join(REPO, 'configs')
# RT-DETR with the efficient-ViT backbones, and the same backbones in mmdet's RetinaNet (configs/mixing)
CONFIGS = sorted(osp.relpath(p, CONFIG_DIR) for p in glob.glob(f'{CONFIG_DIR}/rtdetr_vit/*.py')
                 + [p for p in glob.glob(f'{CONFIG_DIR}/mixing/retinanet_*.py') if 'hybrid-encoder' not in p])
DEMOS = [c for c in CONFIGS if c.endswith('_demo-256.py')]
FULL = [c for c in CONFIGS if c not in DEMOS]
# The default suite trains every RT-DETR demo and RetinaNet with the simple feature pyramid (the other RetinaNet demos
# differ only in the backbone, which the RT-DETR demos train): ~40 s on 2 free cores; all of them in the slow suite.
DEFAULT_DEMOS = [c for c in DEMOS if c.startswith('rtdetr_vit/')] + ['mixing/retinanet_vit-s_sfp_demo-256.py']

# Trainable parameters of the COCO configs (the rows of the README table; the ViTs' position embeddings are sized
# for the configs' img_size: 640x640 for RT-DETR, 800x1344 for RetinaNet).
PARAMS = {
    'rtdetr_vit/rtdetr_swin-t_4xb4-72e_coco.py': 46_364_166,
    'rtdetr_vit/rtdetr_vit-s_sfp_4xb4-72e_coco.py': 43_222_860,
    'rtdetr_vit/rtdetr_hydra-vit-s_sfp_4xb4-72e_coco.py': 43_222_860,
    'mixing/retinanet_swin-t_fpn_1x_coco.py': 38_458_606,
    'mixing/retinanet_vit-s_sfp_1x_coco.py': 31_988_276,
    'rtdetr_vit/rtdetr_nextvit-s_4xb4-72e_coco.py': 49_696_716,
    'mixing/retinanet_nextvit-s_fpn_1x_coco.py': 42_380_980,
}


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(name: str) -> Config:
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    backbone = cfg.model.backbone.type
    assert DET_MODELS.get(backbone) is not None, f'{name}: backbone {backbone!r} is not registered in MMDetection'
    return cfg


def vit(img_size=64, **kwargs):
    return CLS_MODELS.build(dict(type='ViTWithMixer', arch=dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0),
                                 img_size=img_size, **kwargs))


# ViTWithMixer: out_type='featmap'

@pytest.mark.parametrize('with_cls_token', [True, False])
def test_featmap_is_the_patch_grid(with_cls_token):
    """The map holds the final (normed) patch tokens at their grid positions, prefix tokens dropped, also at an
    input size other than the build size (resized position embedding) and non-square."""
    model = vit(out_type='featmap', with_cls_token=with_cls_token).eval()
    x = torch.randn(2, 3, 48, 80)
    (featmap, ) = model(x)
    assert featmap.shape == (2, 64, 3, 5)
    tokens = model.norm(model.forward_patch_stage(x))[:, int(with_cls_token):]  # B, N, C in row-major order
    assert torch.equal(featmap[:, :, 1, 2], tokens[:, 1 * 5 + 2])
    featmap.sum().backward()
    assert model.patch_embed.projection.weight.grad is not None


def test_featmap_keeps_the_other_outputs():
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    avg = vit(out_type='avg').eval()
    torch.manual_seed(0)
    featmap = vit(out_type='featmap').eval()
    assert torch.allclose(avg(x)[0], featmap(x)[0].mean(dim=(2, 3)), atol=1e-6)


def test_classification_checkpoint_loads_into_the_detection_vit(tmp_path):
    """A classification checkpoint (another size, class token, head) initializes the detection ViT (no class token,
    non-square): the position embedding is resized to the new grid, the class token and head are left out."""
    classifier = vit(out_type='cls_token')  # a 4x4 patch grid
    torch.nn.init.normal_(classifier.pos_embed)
    state = {'backbone.' + k: v for k, v in classifier.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 64)
    torch.save(dict(state_dict=state), tmp_path / 'cls.pth')
    detector_vit = vit(img_size=(96, 128), out_type='featmap', with_cls_token=False,
                       init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth'), prefix='backbone.'))
    detector_vit.init_weights()
    assert detector_vit.pos_embed.shape == (1, 6 * 8, 64)
    assert torch.equal(detector_vit.patch_embed.projection.weight, classifier.patch_embed.projection.weight)
    resized = torch.nn.functional.interpolate(classifier.pos_embed.reshape(1, 4, 4, 64).permute(0, 3, 1, 2),
                                              size=(6, 8), mode='bicubic', align_corners=False)
    assert torch.allclose(detector_vit.pos_embed, resized.flatten(2).transpose(1, 2), atol=1e-5)


def test_featmap_with_token_reducer_is_a_clear_error():
    with pytest.raises(ValueError, match="featmap.*ToMeMerge.*without reducers"):
        vit(out_type='featmap', reducers=[dict(type='ToMeMerge', layer=0, r=4)])
    with pytest.raises(ValueError, match="'cls_token', 'avg' or 'featmap'"):
        vit(out_type='grid')


# SimpleFeaturePyramid

@pytest.mark.parametrize('scales, strides', [((2.0, 1.0, 0.5), (8, 16, 32)), ((4.0, 2.0, 1.0, 0.5), (4, 8, 16, 32))])
@pytest.mark.parametrize('num_extra_levels', [0, 2])
def test_simple_feature_pyramid_shapes_and_strides(scales, strides, num_extra_levels):
    neck = DET_MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=64, out_channels=32, scale_factors=scales,
                                 num_extra_levels=num_extra_levels))
    h, w = 96, 160  # input image; the ViT/16 map is 6x10
    outs = neck((torch.randn(2, 64, h // 16, w // 16), ))
    strides = strides + tuple(strides[-1] * 2**(i + 1) for i in range(num_extra_levels))
    assert [o.shape for o in outs] == [(2, 32, math.ceil(h / s), math.ceil(w / s)) for s in strides]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_simple_feature_pyramid_clear_errors():
    with pytest.raises(ValueError, match=r'subset of \(4.0, 2.0, 1.0, 0.5\)'):
        DET_MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=64, scale_factors=(8.0, )))
    neck = DET_MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=64))
    with pytest.raises(ValueError, match="out_type='featmap'"):
        neck((torch.randn(2, 64), ))  # a ViT's class-token output


# Every config builds, its backbone and neck give the levels its head expects

@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_with_the_expected_levels(config):
    cfg = load(config)
    model = DET_MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 192))
    shapes = [tuple(f.shape) for f in feats]
    print(f'{config}: {params:,} parameters, levels {shapes}')
    is_rtdetr = cfg.model.type == 'RTDETR'
    strides = (8, 16, 32) if is_rtdetr else (8, 16, 32, 64, 128)
    channels = cfg.model.feat_channels if is_rtdetr else [cfg.model.bbox_head.in_channels] * 5
    assert shapes == [(1, c, math.ceil(128 / s), math.ceil(192 / s)) for c, s in zip(channels, strides)]
    if config in PARAMS:
        assert params == PARAMS[config]
    if config in FULL:
        assert cfg.model.bbox_head.num_classes == 80
        assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    else:
        assert cfg.model.bbox_head.num_classes == 4
        assert cfg.train_dataloader.dataset.type == 'DemoCocoDataset'


@pytest.mark.parametrize('config', [c for c in FULL if not c.startswith('mixing/')])
def test_rtdetr_learning_rates(config):
    """RT-DETR's recipe: AdamW 1e-4, the pretrained backbone at 1e-5, no decay on norms, biases, position
    embeddings and position tables; the simple feature pyramid (new) at the full rate."""
    cfg = load(config)
    model = DET_MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
    norms = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    no_decay = 0
    for name, param in model.named_parameters():
        group = group_of[id(param)]
        assert math.isclose(group['lr'], 1e-5 if name.startswith('backbone.') else 1e-4), (name, group['lr'])
        if name.endswith(('pos_embed', 'relative_position_bias_table', 'bias')) or id(param) in norms:
            assert group['weight_decay'] == 0, name
            no_decay += 1
        else:
            assert group['weight_decay'] == 1e-4, name
    print(f'{config}: {no_decay} parameters without weight decay')
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1


# The demos train and predict

def _batch(cfg: Config, split: str, indices, size=None):
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    dataset_cfg = dict(loader.dataset, indices=indices)
    if size is not None:  # a smaller input, to keep the default suite short
        dataset_cfg['pipeline'] = [dict(t, scale=(size, size)) if t['type'] == 'Resize' else t
                                   for t in dataset_cfg['pipeline']]
    dataset = DET_DATASETS.build(dataset_cfg)
    return dataset, pseudo_collate([dataset[i] for i in range(len(dataset))])


def _train_and_predict(config: str, size=None, iters=2):
    cfg = load(config)
    if cfg.model.type != 'RTDETR':
        cfg.model.test_cfg.score_thr = 0.0  # an untrained RetinaNet scores below the config's 0.05
    elif size is not None:
        cfg.model.data_preprocessor.batch_augments = None  # no multi-scale above the reduced size
    torch.manual_seed(0)
    model = DET_MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    _, data = _batch(cfg, 'train', [0, 1], size)
    model.train()
    hub = MessageHub.get_current_instance()  # the runner's progress, read by the batch-level multi-scale resize
    hub.update_info('epoch', 0)
    for it in range(iters):
        hub.update_info('iter', it)
        losses = model.train_step(data, optim_wrapper)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        print(f'{config} iter {it}: loss {total.item():.4f} ({len(losses)} terms)')
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
    model.eval()
    dataset, data = _batch(cfg, 'val', [0, 1], size)
    with torch.no_grad():  # as mmengine's ValLoop / TestLoop
        results = model.test_step(data)
    assert len(results) == 2
    for sample in results:
        assert isinstance(sample, DetDataSample)
        pred = sample.pred_instances
        h, w = sample.ori_shape
        n = len(pred)
        assert n > 0 and pred.bboxes.shape == (n, 4) and pred.scores.shape == (n, ) and pred.labels.shape == (n, )
        assert pred.bboxes[:, 0::2].min() >= 0 and pred.bboxes[:, 0::2].max() <= w
        assert pred.bboxes[:, 1::2].min() >= 0 and pred.bboxes[:, 1::2].max() <= h
        assert 0 <= pred.labels.min() and pred.labels.max() < cfg.model.bbox_head.num_classes
    # mmdet's evaluator takes them as they are
    from mmdet.registry import METRICS
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dataset.metainfo
    metric.process({}, [s.to_dict() for s in results])
    scores = metric.evaluate(len(results))
    print(f'{config}: {len(results[0].pred_instances)} detections per image, bbox mAP {scores["coco/bbox_mAP"]}')
    assert 'coco/bbox_mAP' in scores


@pytest.mark.parametrize('config', DEFAULT_DEMOS)
def test_demo_trains_and_predicts(config, one_thread):
    """Two iterations on two demo images at 128 px (the default suite), then predictions and their mAP."""
    _train_and_predict(config, size=128)


@pytest.mark.slow
@pytest.mark.parametrize('config', DEMOS)
def test_demo_trains_and_predicts_at_demo_size(config, one_thread):
    """The same at the demo's size and pipeline (256 px; RT-DETR: multi-scale 192-320)."""
    _train_and_predict(config)


@pytest.mark.slow
def test_demo_trains_with_the_tools(tmp_path):
    """tools/train.py and tools/test.py on the ViT + simple-feature-pyramid RT-DETR demo (one epoch on 16 images)."""
    config = 'configs/rtdetr_vit/rtdetr_hydra-vit-s_sfp_demo-256.py'
    options = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8',
               'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False']
    run_tool('tools/train.py', config, '--work-dir', str(tmp_path), '--cfg-options', *options)
    checkpoint = glob.glob(f'{tmp_path}/epoch_1.pth')
    assert checkpoint, list(tmp_path.iterdir())
    proc = run_tool('tools/test.py', config, checkpoint[0], '--work-dir', str(tmp_path), '--cfg-options', *options[1:])
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
