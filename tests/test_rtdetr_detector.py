"""RT-DETR detector: losses, training step, query selection modes, eval_idx, predict, sizes."""
import copy
import math

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import mmeff  # noqa: F401  (registers the modules)
from mmeff.models.layers.rtdetr_decoder import RTDETRTransformerDecoder
from mmeff.registry import DET_MODELS

from conftest import RTDETR_KEYS_DIR

NUM_CLASSES = 3
NUM_LAYERS = 3


def tiny_cfg(query_select='vfl', eval_idx=-1, embed_dims=64, num_layers=NUM_LAYERS,
             num_classes=NUM_CLASSES, num_queries=30):
    """R18 + ChannelMapper stand in for PResNet + HybridEncoder (same interface: 3 maps)."""
    return dict(
        type='RTDETR',
        num_queries=num_queries,
        feat_channels=(embed_dims, ) * 3,
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3), norm_cfg=dict(type='BN')),
        neck=dict(type='ChannelMapper', in_channels=[128, 256, 512], out_channels=embed_dims,
                  kernel_size=1, num_outs=3, act_cfg=None),
        decoder=dict(type='RTDETRTransformerDecoder', num_layers=num_layers, embed_dims=embed_dims,
                     layer_cfg=dict(num_heads=8, feedforward_channels=4 * embed_dims, num_levels=3,
                                    num_points=4)),
        bbox_head=dict(type='RTDETRHead', num_classes=num_classes, embed_dims=embed_dims,
                       query_select=query_select),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=20)),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)
        ])),
        test_cfg=dict(max_per_img=20, eval_idx=eval_idx))


def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = DET_MODELS.build(tiny_cfg(**kwargs))
    model.init_weights()
    return model


def sample(img_shape, boxes=(), labels=(), pad_shape=None, scale_factor=(1.0, 1.0)):
    h, w = img_shape
    data_sample = DetDataSample(metainfo=dict(
        img_shape=img_shape, batch_input_shape=pad_shape or img_shape, scale_factor=scale_factor,
        ori_shape=(round(h / scale_factor[1]), round(w / scale_factor[0]))))
    data_sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return data_sample


def batch(*box_lists, shape=(64, 96)):
    samples = [
        sample(shape, boxes, [i % NUM_CLASSES for i in range(len(boxes))]) for boxes in box_lists
    ]
    return torch.randn(len(samples), 3, *shape), samples


BOXES_A = [[4., 6., 40., 50.], [50., 10., 90., 60.]]
BOXES_B = [[10., 20., 30., 44.]]


def test_varifocal_loss_matches_formula():
    loss_fn = DET_MODELS.build(dict(type='RTDETRVarifocalLoss'))
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-1.0, 2.0]])
    labels, ious = torch.tensor([0, 2, 1]), torch.tensor([0.7, 0.0, 0.4])  # 2 = background
    expected = 0.0
    for q in range(3):
        for c in range(2):
            p = torch.sigmoid(logits[q, c]).item()
            t = ious[q].item() if labels[q] == c else 0.0
            weight = t if labels[q] == c else 0.75 * p**2
            expected += weight * -(t * math.log(p) + (1 - t) * math.log(1 - p))
    loss = loss_fn(logits, (labels, ious), torch.ones(3), avg_factor=2.0)
    print(f'VFL {loss.item():.6f} vs formula {expected / 2:.6f}')
    assert abs(loss.item() - expected / 2) < 1e-6


def test_loss_has_every_term_and_is_finite():
    model = build().train()
    inputs, samples = batch(BOXES_A, BOXES_B)
    losses = model.loss(inputs, samples)
    expected = set()
    for prefix in ['', 'enc_', 'dn_'] + [f'd{i}.' for i in range(NUM_LAYERS - 1)] + \
            [f'd{i}.dn_' for i in range(NUM_LAYERS - 1)]:
        expected |= {f'{prefix}loss_cls', f'{prefix}loss_bbox', f'{prefix}loss_iou'}
    assert set(losses) == expected, sorted(set(losses) ^ expected)
    for name, value in losses.items():
        assert torch.isfinite(value).all(), name
    # The last decoder layer's VFL / L1 / GIoU are real, positive numbers.
    assert losses['loss_cls'] > 0 and losses['loss_bbox'] > 0 and losses['loss_iou'] > 0


@pytest.mark.parametrize('box_lists', [(BOXES_A, BOXES_B, []), ([], [])],
                         ids=['one-image-without-boxes', 'batch-without-boxes'])
def test_training_step_reaches_every_parameter(box_lists):
    """Every parameter gets a gradient, also without any box: DDP would otherwise hang."""
    model = build().train()
    inputs, samples = batch(*box_lists)
    losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v).all() for v in losses.values())
    total = sum(v.sum() for v in losses.values())
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    backbone_grad = model.backbone.conv1.weight.grad.abs().sum().item()
    print(f'backbone conv1 |grad| sum: {backbone_grad:.3e}')
    assert backbone_grad > 0


def test_uncertainty_selection_differs_and_its_loss_has_gradients():
    explicit = build(query_select='uncertainty').train()
    official = build(query_select='vfl')
    missing, unexpected = official.load_state_dict(explicit.state_dict(), strict=False)
    assert not missing
    assert unexpected == ['bbox_head.enc_iou_head.weight', 'bbox_head.enc_iou_head.bias']
    torch.manual_seed(1)
    memory = torch.randn(2, 120, 64)
    anchors = torch.randn(2, 120, 4)
    valid = torch.ones(2, 120, 1, dtype=torch.bool)
    sel_b = explicit.bbox_head.select_queries(memory, anchors, valid, 30)
    sel_a = official.bbox_head.select_queries(memory, anchors, valid, 30)
    changed = [len(set(a.tolist()) ^ set(b.tolist())) // 2
               for a, b in zip(sel_a.indices, sel_b.indices)]
    print(f'queries selected differently per image (of 30): {changed}')
    assert sel_a.iou_logits is None and sel_b.iou_logits.shape == (2, 30)
    assert min(changed) > 0
    # The uncertainty terms reach the IoU predictor and the encoder class branch.
    inputs, samples = batch(BOXES_A, BOXES_B)
    losses = explicit.loss(inputs, samples)
    assert {'enc_loss_iou_pred', 'enc_loss_uncertainty'} <= set(losses)
    losses['enc_loss_uncertainty'].backward()
    iou_grad = explicit.bbox_head.enc_iou_head.weight.grad.abs().sum().item()
    cls_grad = explicit.bbox_head.cls_branches[NUM_LAYERS].weight.grad.abs().sum().item()
    print(f'enc_loss_uncertainty={losses["enc_loss_uncertainty"].item():.4f} '
          f'|grad| iou head {iou_grad:.3e}, enc class branch {cls_grad:.3e}')
    assert iou_grad > 0 and cls_grad > 0


def paper_topk(score, valid, k):
    """Indices of the ``k`` best valid tokens per image, best first, and the score gap at the cut."""
    indices, gaps = [], []
    for image_score, image_valid in zip(score, valid[..., 0]):
        candidates = image_valid.nonzero()[:, 0]
        ranked = image_score[candidates].sort(descending=True)
        indices.append(candidates[ranked.indices[:k]])
        gaps.append((ranked.values[k - 1] - ranked.values[k]).item())
    return torch.stack(indices), min(gaps)


@pytest.mark.parametrize('uncertainty_lambda', [1.0, 0.5])
def test_uncertainty_selection_ranks_tokens_by_the_papers_score(uncertainty_lambda):
    """The detector's queries are the K valid encoder tokens with the largest
    ``C(X) - lambda * |P(X) - C(X)|``, ``C(X) = max_c sigmoid(class logit)``, ``P(X) = sigmoid(IoU
    logit)``, recomputed here from the encoder class branch and the IoU head by hand."""
    model = build(query_select='uncertainty').eval()
    head = model.bbox_head
    head.uncertainty_lambda = uncertainty_lambda
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # distinct branches (init deep-copies one), C and P both spread over (0, 1)
        for linear in [*head.cls_branches, head.enc_iou_head]:
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) / 4)
            linear.bias.copy_(torch.randn(linear.bias.shape, generator=gen) / 2)
    shapes, ratios = [(8, 12), (4, 6), (2, 3)], ((1.0, 1.0), (0.5, 1.0))  # image 1: left half valid
    anchors, valid, _ = model.generate_anchors(shapes, ratios, torch.device('cpu'))
    memory = torch.randn(2, anchors.size(1), 64, generator=gen)
    captured = []
    model.enc_output.register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        decoder_inputs, _ = model.pre_decoder(memory, anchors, valid)
        [enc_memory] = captured
        weight, bias = head.cls_branches[NUM_LAYERS].weight, head.cls_branches[NUM_LAYERS].bias
        confidence = torch.sigmoid(enc_memory @ weight.T + bias).max(-1).values
        iou = torch.sigmoid(enc_memory @ head.enc_iou_head.weight.T + head.enc_iou_head.bias)[..., 0]
        selected = head.select_queries(enc_memory, anchors, valid, 30)
    score = confidence - uncertainty_lambda * (iou - confidence).abs()
    expected, gap = paper_topk(score, valid, 30)
    print(f'lambda={uncertainty_lambda}: C in [{confidence.min():.2f}, {confidence.max():.2f}], '
          f'P in [{iou.min():.2f}, {iou.max():.2f}], score gap at the top-30 cut {gap:.2e}')
    assert gap > 1e-5  # no near-tie at the cut: the expected set is well defined
    # Scores a sign or term error would give pick other tokens on this data: the check can fail.
    other_lambda = 1.5 - uncertainty_lambda  # 0.5 <-> 1.0: the configured lambda is not ignored
    for wrong in (confidence + uncertainty_lambda * (iou - confidence).abs(),
                  confidence - uncertainty_lambda * (iou - confidence), confidence,
                  confidence - other_lambda * (iou - confidence).abs()):
        assert not torch.equal(paper_topk(wrong, valid, 30)[0], expected)
    assert torch.equal(selected.indices, expected)
    assert torch.equal(decoder_inputs['query'], enc_memory.gather(1, expected[..., None].expand(-1, -1, 64)))
    # What the losses see is what was selected.
    assert torch.allclose(selected.iou_logits.sigmoid(), iou.gather(1, expected))
    assert torch.allclose(selected.cls_logits, (enc_memory @ weight.T + bias).gather(
        1, expected[..., None].expand(-1, -1, NUM_CLASSES)))


@pytest.mark.parametrize('eval_idx', [0, 1])
def test_eval_idx_equals_full_model_layer(eval_idx):
    full = build().eval()
    early = build(eval_idx=eval_idx).eval()
    early.load_state_dict(full.state_dict())
    inputs, samples = batch(BOXES_A, shape=(64, 96))
    with torch.no_grad():
        cls_full, box_full = full._forward(inputs, samples)
        cls_early, box_early = early._forward(inputs, samples)
    assert cls_full.shape[0] == NUM_LAYERS and cls_early.shape[0] == eval_idx + 1
    diff = max((cls_early[-1] - cls_full[eval_idx]).abs().max().item(),
               (box_early[-1] - box_full[eval_idx]).abs().max().item())
    print(f'eval_idx={eval_idx}: max abs diff vs full model layer {eval_idx}: {diff:.3e}')
    assert diff < 1e-6



def test_channels_last_inference_gives_the_same_outputs():
    model = build().eval()
    layouts = []
    model.backbone.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    inputs, samples = batch(BOXES_A, shape=(64, 96))
    with torch.no_grad():
        cls_nhwc, box_nhwc = model._forward(inputs, samples)
        model.channels_last = False
        cls_nchw, box_nchw = model._forward(inputs, samples)
    assert layouts == [True, False]
    diff = max((cls_nhwc - cls_nchw).abs().max().item(), (box_nhwc - box_nchw).abs().max().item())
    print(f'channels-last vs. NCHW inference: max abs diff {diff:.3e}')
    assert diff < 1e-4

def test_bad_eval_idx_is_rejected_with_advice():
    with pytest.raises(ValueError, match='eval_idx'):
        build(eval_idx=NUM_LAYERS)


def test_decoder_variant_is_a_config():
    """``decoder.type`` chooses the decoder class; the head's branches follow its layer count."""

    class DecoderVariant(RTDETRTransformerDecoder):
        pass

    cfg = tiny_cfg(num_layers=2)
    cfg['decoder']['type'] = DecoderVariant
    model = DET_MODELS.build(cfg)
    assert type(model.decoder) is DecoderVariant
    assert len(model.bbox_head.reg_branches) == 2 + 1  # a branch per layer + the encoder's
    cfg = tiny_cfg()
    cfg['bbox_head']['num_pred_layer'] = 4
    with pytest.raises(ValueError, match='num_pred_layer'):
        DET_MODELS.build(cfg)


def test_predict_non_square_padded_input_in_original_coordinates():
    model = build().eval()
    img_shape, pad_shape, scale = (64, 80), (64, 96), (0.5, 0.25)  # original image 256 x 160
    samples = [sample(img_shape, pad_shape=pad_shape, scale_factor=scale)]
    inputs = torch.randn(1, 3, *pad_shape)
    with torch.no_grad():
        results = model.predict(inputs, copy.deepcopy(samples))[0].pred_instances
        cls, boxes = model._forward(inputs, samples)
    assert len(results.bboxes) == 20
    # Reference post-processing: top-20 over queries x classes, cxcywh -> xyxy in the
    # (unpadded) input, divided by the scale factor.
    scores, index = cls[-1, 0].sigmoid().flatten().topk(20)
    box = boxes[-1, 0][index // NUM_CLASSES]
    xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], -1)
    xyxy = xyxy * torch.tensor([80., 64., 80., 64.])
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, 80)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, 64)
    xyxy = xyxy / torch.tensor([0.5, 0.25, 0.5, 0.25])
    diff = (results.bboxes - xyxy).abs().max().item()
    print(f'predict vs manual post-processing: max abs box diff {diff:.3e}')
    assert diff < 1e-4
    assert torch.allclose(results.scores, scores)
    assert torch.equal(results.labels, index % NUM_CLASSES)
    assert results.bboxes[:, 0::2].max() <= 160 and results.bboxes[:, 1::2].max() <= 256


def test_anchors_cached_and_masked_in_padding():
    model = build()
    shapes = [(8, 12), (4, 6), (2, 3)]
    ratios = ((1.0, 1.0), (0.5, 1.0))
    anchors, valid, ratio_tensor = model.generate_anchors(shapes, ratios, torch.device('cpu'))
    again = model.generate_anchors(shapes, ratios, torch.device('cpu'))[0]
    assert again is anchors and anchors.shape == (2, 96 + 24 + 6, 4)
    assert ratio_tensor.tolist() == [[1.0, 1.0], [0.5, 1.0]]
    # Image 1 covers the left half: level-0 cells in the right half are invalid.
    level0 = valid[1, :96, 0].view(8, 12)
    assert not level0[:, 6:].any() and level0[1:-1, 1:5].all()
    assert torch.isinf(anchors[~valid[..., 0]]).all()


def official_decoder_numel(model_name):
    """Sum of the official ``decoder.*`` parameter shapes (buffers excluded)."""
    path = RTDETR_KEYS_DIR / f'{model_name}.keys.txt'
    total = {}
    for line in path.read_text().splitlines():
        name, shape = line.split('\t')
        if not name.startswith('decoder.') or name.split('.')[-1] in (
                'running_mean', 'running_var', 'num_batches_tracked') or name in (
                    'decoder.anchors', 'decoder.valid_mask'):
            continue
        numel = 1
        for dim in eval(shape):
            numel *= dim
        part = 'decoder_layers' if name.startswith('decoder.decoder.') else 'rest'
        total[part] = total.get(part, 0) + numel
    return total


@pytest.mark.parametrize('model_name, num_layers', [('rtdetr_r18vd_6x_coco', 3),
                                                    ('rtdetr_r50vd_6x_coco', 6)])
def test_decoder_parameter_count_equals_official(model_name, num_layers):
    official = official_decoder_numel(model_name)
    model = DET_MODELS.build(tiny_cfg(embed_dims=256, num_layers=num_layers, num_classes=80,
                                      num_queries=300))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    layers = count(model.decoder.layers)
    rest = sum(count(m) for m in (model.input_proj, model.decoder.query_pos_head,
                                  model.enc_output, model.bbox_head, model.dn_query_generator))
    # The official denoising_class_embed has a padding row (index 80, always zero) that mmdet's
    # CdnQueryGenerator does not: the converter drops it.
    padding_row = 256
    print(f'{model_name}: decoder layers {layers} vs {official["decoder_layers"]}, '
          f'rest {rest} + padding row {padding_row} vs {official["rest"]}')
    assert layers == official['decoder_layers']
    assert rest + padding_row == official['rest']
