"""Deployment: deploy configs, the mmdeploy/torch compatibility guard, ONNX export of RT-DETR and
a ViT classifier through mmdeploy, ONNX Runtime parity with PyTorch, the TensorRT path."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine import Config

from conftest import run_tool, skip_for_hardware

pytest.importorskip('mmdeploy', reason='the deploy extra is not installed: pip install -e .[deploy]')
onnx = pytest.importorskip('onnx', reason='the deploy extra is not installed')
pytest.importorskip('onnxruntime', reason='the deploy extra is not installed')

from mmeff.deploy import (  # noqa: E402
    build_deploy_model,
    check_deploy_stack,
    compat,  # noqa: E402
    detection_parity,
    export_for,
    export_onnx,
    match_detections,
    pytorch_outputs,
)
from mmeff.deploy.backends import FP16_BOX_TOLERANCE, FP16_SCORE_TOLERANCE, ONNXRuntime, TensorRT  # noqa: E402
from mmeff.models.layers.repvgg import RepVGGBlock  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEPLOY_DIR = osp.join(REPO, 'configs', 'deploy')
ORT_STATIC = osp.join(DEPLOY_DIR, 'detection_onnxruntime_static-640x640.py')
ORT_DYNAMIC = osp.join(DEPLOY_DIR, 'detection_onnxruntime_dynamic-batch-640x640.py')
TRT_FP16 = osp.join(DEPLOY_DIR, 'detection_tensorrt-fp16_static-640x640.py')
ORT_CLS = osp.join(DEPLOY_DIR, 'classification_onnxruntime_static-224x224.py')
# ONNX Runtime vs PyTorch, both FP32 on the CPU; the bounds are ~10x the largest difference the
# tests below measure (printed with -s), so a real regression fails them.
# Detections (RT-DETR, random weights, one-to-one matched): R18 320x320 batch 2: boxes 1.5e-4 px,
# scores 8.9e-7; R50 640x640: 4.3e-4 px, 6.0e-7. Box rounding scales with the coordinates, i.e.
# with the input size.
BOX_TOLERANCE_320 = 1.5e-3  # px at 320x320; twice that at 640x640
SCORE_TOLERANCE = 1e-5
# Classifiers (random weights, head scaled to logits of std 3; the ViT demo at 64x64, the others
# at 224x224): probabilities up to 2.1e-6 (EViT; <= 5.1e-7 in the default selection), log-
# probabilities up to 8.8e-6 (ResNet-50).
PROB_TOLERANCE = 2e-5
LOG_PROB_TOLERANCE = 1e-4


def deploy_cfg(path, size=None):
    cfg = Config.fromfile(path)
    if size is not None:
        cfg.onnx_config.input_shape = [size, size]
    return cfg


def test_detection_deploy_configs():
    for path in (ORT_STATIC, ORT_DYNAMIC, TRT_FP16):
        cfg = deploy_cfg(path)
        assert cfg.onnx_config.opset_version >= 16, path  # GridSample
        assert cfg.onnx_config.input_shape == [640, 640], path
        assert cfg.onnx_config.output_names == ['dets', 'labels'], path
        assert (cfg.codebase_config.type, cfg.codebase_config.task) == ('mmdet', 'ObjectDetection')
    assert deploy_cfg(ORT_STATIC).backend_config.type == 'onnxruntime'
    assert 'dynamic_axes' not in deploy_cfg(ORT_STATIC).onnx_config
    dynamic = deploy_cfg(ORT_DYNAMIC)
    assert dynamic.backend_config.type == 'onnxruntime'
    # Only the batch axis is dynamic.
    assert dynamic.onnx_config.dynamic_axes == dict(input={0: 'batch'}, dets={0: 'batch'},
                                                    labels={0: 'batch'})
    trt = deploy_cfg(TRT_FP16).backend_config
    assert trt.type == 'tensorrt'
    assert trt.common_config.fp16_mode is True
    assert trt.common_config.max_workspace_size >= 1 << 30
    shapes = trt.model_inputs[0].input_shapes.input
    assert shapes.min_shape == shapes.opt_shape == shapes.max_shape == [1, 3, 640, 640]


def test_classification_deploy_config():
    cfg = deploy_cfg(ORT_CLS)
    assert (cfg.codebase_config.type, cfg.codebase_config.task) == ('mmpretrain', 'Classification')
    assert cfg.backend_config.type == 'onnxruntime'
    assert cfg.onnx_config.input_shape == [224, 224]
    assert cfg.onnx_config.output_names == ['output']
    trt = deploy_cfg(osp.join(DEPLOY_DIR, 'classification_tensorrt-fp16_static-224x224.py'))
    assert trt.codebase_config.type == 'mmpretrain' and trt.backend_config.common_config.fp16_mode is True
    shapes = trt.backend_config.model_inputs[0].input_shapes.input
    assert shapes.min_shape == shapes.opt_shape == shapes.max_shape == [1, 3, 224, 224]


def test_stack_guard(monkeypatch):
    check_deploy_stack()  # the installed stack is the tested one
    monkeypatch.setitem(compat.TESTED_DEPLOY_STACK, 'mmdeploy', '0.0.1')
    with pytest.raises(RuntimeError, match=r'mmdeploy .* \(tested: 0.0.1\)'):
        check_deploy_stack()


def test_torchscript_export_is_scoped(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.onnx, 'export', lambda *args, **kwargs: calls.append(kwargs))
    patched_out = torch.onnx.export
    with compat.torchscript_onnx_export():
        torch.onnx.export(None, ())
        torch.onnx.export(None, (), dynamo=True)  # an explicit choice is kept
    assert calls == [dict(dynamo=False), dict(dynamo=True)]
    assert torch.onnx.export is patched_out


def test_opset_below_16_is_refused():
    cfg = deploy_cfg(ORT_STATIC)
    cfg.onnx_config.opset_version = 11
    with pytest.raises(ValueError, match='opset_version >= 16'):
        build_deploy_model(cfg, osp.join(REPO, 'configs', 'rtdetr_r18.py'))


def op_types(onnx_file):
    return {node.op_type for node in onnx.load(onnx_file).graph.node}


def box_tolerance(size):
    return BOX_TOLERANCE_320 * size / 320


def check_detection_match(report, box_tol, score_tol):
    assert report['agree'], (f'{report["mismatched"]} of {report["num_dets"]} detections have no '
                             f'partner of the same label within {box_tol} px and {score_tol} in '
                             f'score, or the sorted scores differ by {report["sorted_score"]:.2e}: '
                             f'{report}')


def synthetic_detections(num=50, size=320, seed=0):
    """(1, num, 5) dets and (1, num) labels like a top-K output: distinct boxes, scores sorted."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size / 2, (num, 2))
    wh = rng.uniform(8, size / 2, (num, 2))
    scores = np.sort(rng.uniform(0.7, 0.9, num))[::-1]
    dets = np.concatenate([xy, xy + wh, scores[:, None]], 1).astype(np.float32)[None]
    return dets, rng.integers(0, 5, (1, num))


def test_match_detections_one_to_one():
    dets, labels = synthetic_detections()
    box_tol, score_tol = box_tolerance(320), SCORE_TOLERANCE
    rng = np.random.default_rng(1)
    # Reordered, with rounding-size noise: agree, and the diffs are measured on the right pairs.
    order = rng.permutation(dets.shape[1])
    noisy = dets[:, order] + rng.uniform(-1, 1, dets.shape) * [1e-4, 1e-4, 1e-4, 1e-4, 1e-6]
    report = match_detections(noisy, labels[:, order], dets, labels, box_tol, score_tol)
    assert report['agree'] and report['mismatched'] == 0
    assert 0 < report['box'] <= 1e-4 + 1e-5 and 0 < report['score'] <= 2e-6
    # One detection repeated K times: the nearest-neighbour matching it replaces found diff 0.
    repeated = [np.repeat(a[:, :1], dets.shape[1], 1) for a in (dets, labels)]
    report = match_detections(*repeated, dets, labels, box_tol, score_tol)
    assert not report['agree'] and report['mismatched'] == dets.shape[1] - 1
    assert report['sorted_score'] > 0.1
    # ... and no "swap at the top-K cut" excuses it, not even when it is the lowest detection.
    for row in (0, dets.shape[1] - 1):
        repeated = [np.repeat(a[:, row:row + 1], dets.shape[1], 1) for a in (dets, labels)]
        report = match_detections(*repeated, dets, labels, box_tol, score_tol, allow_top_k_swaps=True)
        assert not report['agree'] and report['mismatched_off_cut'] > 0, report
    # One wrong label, one box off by 10x the tolerance, one score off by 10x the tolerance.
    for column, change in ((None, None), (0, 10 * box_tol), (4, 10 * score_tol)):
        broken_dets, broken_labels = dets.copy(), labels.copy()
        if column is None:
            broken_labels[0, 10] = (broken_labels[0, 10] + 1) % 5
        else:
            broken_dets[0, 10, column] += change
        report = match_detections(broken_dets, broken_labels, dets, labels, box_tol, score_tol)
        assert not report['agree'] and report['mismatched'] == 1, (column, report)
    # Fewer detections, and NaNs.
    with pytest.raises(ValueError, match='different numbers of detections'):
        match_detections(dets[:, 1:], labels[:, 1:], dets, labels, box_tol, score_tol)
    nan_dets = dets.copy()
    nan_dets[0, :, 4] = np.nan
    assert not match_detections(nan_dets, labels, dets, labels, box_tol, score_tol)['agree']


def test_match_detections_fp16_swaps_at_the_top_k_cut():
    """TensorRT FP16: errors of its size agree; a candidate below the cut may replace the lowest
    one (allowed only with allow_top_k_swaps); a swap away from the cut is still a mismatch."""
    dets, labels = synthetic_detections(size=640)
    rng = np.random.default_rng(2)
    noise = rng.uniform(-0.4, 0.4, dets.shape) * ([FP16_BOX_TOLERANCE] * 4 + [FP16_SCORE_TOLERANCE])
    fp16 = (dets + noise).astype(np.float16).astype(np.float32)
    tols = FP16_BOX_TOLERANCE, FP16_SCORE_TOLERANCE
    report = match_detections(fp16, labels, dets, labels, *tols)
    assert report['agree'] and report['mismatched'] == 0 and report['box'] > 0.1
    lowest = dets[0, :, 4].argmin()
    swapped = fp16.copy()
    swapped[0, lowest, :4] += 50  # another candidate of about the same score took the last place
    swapped[0, lowest, 4] = dets[0, lowest, 4] - 0.5 * FP16_SCORE_TOLERANCE
    report = match_detections(swapped, labels, dets, labels, *tols)
    assert not report['agree'] and (report['mismatched'], report['mismatched_off_cut']) == (1, 0)
    assert match_detections(swapped, labels, dets, labels, *tols, allow_top_k_swaps=True)['agree']
    top = dets[0, :, 4].argmax()
    swapped = fp16.copy()
    swapped[0, top, :4] += 50
    report = match_detections(swapped, labels, dets, labels, *tols, allow_top_k_swaps=True)
    assert not report['agree'] and report['mismatched_off_cut'] == 1


def check_rtdetr_parity(model_cfg, deploy_path, size, batch_size, tmp_path, eval_idx=None):
    torch.manual_seed(0)
    cfg = deploy_cfg(deploy_path, size)
    model, cfg, _ = build_deploy_model(cfg, osp.join(REPO, 'configs', model_cfg), eval_idx=eval_idx)
    blocks = [m for m in model.modules() if isinstance(m, RepVGGBlock)]
    assert blocks and all(block.deployed for block in blocks)
    onnx_file = export_onnx(model, cfg, str(tmp_path / 'end2end.onnx'))
    ops = op_types(onnx_file)
    assert 'GridSample' in ops and 'TopK' in ops, ops
    assert 'NonMaxSuppression' not in ops
    assert all(node.domain in ('', 'ai.onnx') for node in onnx.load(onnx_file).graph.node)
    inputs = torch.rand(batch_size, 3, size, size)
    ort_out = ONNXRuntime(onnx_file).run(inputs.numpy())
    torch_out = pytorch_outputs(model, inputs, cfg)
    num_queries = model.test_cfg['max_per_img']
    assert ort_out['dets'].shape == (batch_size, num_queries, 5)
    assert ort_out['labels'].shape == (batch_size, num_queries)
    box_tol = box_tolerance(size)
    report = match_detections(ort_out['dets'], ort_out['labels'], torch_out['dets'],
                              torch_out['labels'], box_tol, SCORE_TOLERANCE)
    print(f'{model_cfg} {size}x{size} batch {batch_size} eval_idx {eval_idx}: one-to-one matched '
          f'{report["num_dets"] - report["mismatched"]}/{report["num_dets"]}, max |box diff| '
          f'{report["box"]:.2e} px (bound {box_tol:.1e}), max |score diff| {report["score"]:.2e}, '
          f'sorted scores {report["sorted_score"]:.2e} (bound {SCORE_TOLERANCE:.0e})')
    check_detection_match(report, box_tol, SCORE_TOLERANCE)
    return model, onnx_file


def test_rtdetr_r18_dynamic_batch_parity(tmp_path):
    """Traced at batch 1, run at batch 2: the batch axis is really dynamic."""
    check_rtdetr_parity('rtdetr_r18.py', ORT_DYNAMIC, 320, 2, tmp_path)


def test_rtdetr_r18_eval_idx_parity(tmp_path):
    """eval_idx=0 exports a graph that stops after the first of the 3 decoder layers."""
    model, onnx_file = check_rtdetr_parity('rtdetr_r18.py', ORT_STATIC, 320, 1, tmp_path,
                                           eval_idx=0)
    assert model.num_eval_layers == 1
    # One GridSample per feature level in each decoder layer that runs.
    num_grid_samples = sum(n.op_type == 'GridSample' for n in onnx.load(onnx_file).graph.node)
    assert num_grid_samples == model.num_feature_levels


@pytest.mark.slow
def test_rtdetr_r50_parity_640(tmp_path):
    check_rtdetr_parity('rtdetr_r50.py', ORT_STATIC, 640, 1, tmp_path)


LOGIT_STD = 3.0


def classifier_inputs(size):
    """Two unlike images, a noise one and a smooth one, so that their outputs differ clearly."""
    noise = torch.rand(1, 3, size, size)
    smooth = F.interpolate(torch.rand(1, 3, 4, 4), size=(size, size), mode='bilinear', align_corners=False)
    return torch.cat([noise, smooth])


def scale_head(model, inputs, logit_std=LOGIT_STD):
    """A random head scaled so that the logits of ``inputs`` have std ``logit_std`` over classes.

    The initialized head gives near-uniform probabilities, and a unit-variance one gives logits of
    std 0.5 (ViT demo) to ~30 (Swin, whose probabilities then underflow to 0): each would hide
    differences in the features. Logits of std 3 give a clear top-1 and no probability below 1e-10.
    """
    fc = model.head.fc
    torch.nn.init.normal_(fc.weight)
    with torch.no_grad():
        scale = logit_std / model.head(model.extract_feat(inputs)).std(1).mean()
        fc.weight.mul_(scale)
        if fc.bias is not None:
            fc.bias.mul_(scale)


def classifier_diffs(probs, ref_probs):
    """ONNX Runtime vs PyTorch class probabilities (N, C), and how informative the outputs are."""
    probs, ref_probs = np.asarray(probs, dtype=np.float64), np.asarray(ref_probs, dtype=np.float64)
    assert probs.shape == ref_probs.shape, (probs.shape, ref_probs.shape)
    with np.errstate(divide='ignore', invalid='ignore'):
        log_probs, ref_log_probs = np.log(probs), np.log(ref_probs)
    return dict(
        prob=float(np.abs(probs - ref_probs).max()),
        # log p = logits - logsumexp: the logits' differences, also those of the unlikely classes.
        log_prob=float(np.nan_to_num(np.abs(log_probs - ref_log_probs), nan=np.inf).max()),
        top1=probs.argmax(1), ref_top1=ref_probs.argmax(1),
        # Per image, over classes: not flat.
        spread=float((probs.max(1) - probs.min(1)).min()),
        logit_std=float(np.nan_to_num(log_probs.std(1), nan=0.0).min()),
        # Between images: an output that ignores the input cannot be within the bound.
        ref_between_inputs=float(np.abs(ref_probs[:, None] - ref_probs[None]).max()))


def check_classifier_diffs(diffs):
    assert diffs['prob'] < PROB_TOLERANCE, f'probabilities differ: {diffs}'
    assert diffs['log_prob'] < LOG_PROB_TOLERANCE, f'log-probabilities differ: {diffs}'
    assert np.array_equal(diffs['top1'], diffs['ref_top1']), f'top-1 differs: {diffs}'
    # LOGIT_STD 3 gives a spread of 0.04 (ResNet-50, 1000 classes) to 0.7; uniform gives 0.
    assert diffs['spread'] > 0.01 and diffs['logit_std'] > 1, f'flat outputs: {diffs}'
    assert diffs['ref_between_inputs'] > 100 * PROB_TOLERANCE, f'inputs not told apart: {diffs}'


def test_classifier_diffs_catch_flat_and_constant_outputs():
    rng = np.random.default_rng(0)
    logits = LOGIT_STD * rng.standard_normal((2, 1000))
    softmax = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    ref = softmax(logits)
    check_classifier_diffs(classifier_diffs(ref * (1 + rng.uniform(-1e-6, 1e-6, ref.shape)), ref))
    uniform = np.full_like(ref, 1 / ref.shape[1])
    same_for_every_input = np.repeat(ref[:1], 2, 0)
    unlikely_classes_off = ref.copy()
    unlikely_classes_off[ref < 1e-6] *= 2  # probabilities within 1e-6, logits off by log(2)
    near_tie = logits.copy()
    near_tie[:, :2] = near_tie.max(1, keepdims=True) + [1e-6, 0]  # top-1 by a hair
    swapped = near_tie.copy()
    swapped[:, :2] = swapped[:, 1::-1]
    for (probs, probs_ref), reason in [
            ((uniform, ref), 'probabilities differ'),
            ((same_for_every_input, ref), 'probabilities differ'),
            ((softmax(logits / 2), ref), 'probabilities differ'),  # same top-1, flatter
            ((unlikely_classes_off, ref), 'log-probabilities differ'),
            ((softmax(swapped), softmax(near_tie)), 'top-1 differs'),
            ((uniform, uniform), 'flat outputs'),  # e.g. an untouched head: nothing to compare
            ((same_for_every_input, same_for_every_input), 'inputs not told apart')]:
        with pytest.raises(AssertionError, match=reason):
            check_classifier_diffs(classifier_diffs(probs, probs_ref))


def check_classifier_parity(model_cfg, size, tmp_path):
    torch.manual_seed(0)
    cfg = deploy_cfg(ORT_CLS, size)
    model, cfg, _ = build_deploy_model(cfg, osp.join(REPO, 'configs', model_cfg))
    inputs = classifier_inputs(size)
    scale_head(model, inputs)
    onnx_file = export_onnx(model, cfg, str(tmp_path / 'end2end.onnx'))
    session = ONNXRuntime(onnx_file)
    # The classification graph is static at batch 1.
    ort_out = np.concatenate([session.run(x[None].numpy())['output'] for x in inputs])
    torch_out = pytorch_outputs(model, inputs, cfg)['output']
    diffs = classifier_diffs(ort_out, torch_out)
    print(f'{model_cfg} {size}x{size}: max |probability diff| {diffs["prob"]:.2e} '
          f'(bound {PROB_TOLERANCE:.0e}), max |log-probability diff| {diffs["log_prob"]:.2e} '
          f'(bound {LOG_PROB_TOLERANCE:.0e}), top-1 {diffs["top1"]} (PyTorch {diffs["ref_top1"]}), '
          f'top-1 prob {ort_out.max(1).round(3)}, logit std {diffs["logit_std"]:.2f}, '
          f'inputs differ by {diffs["ref_between_inputs"]:.2e}')
    check_classifier_diffs(diffs)
    return onnx_file


def test_vit_classifier_parity_and_latency(tmp_path):
    onnx_file = check_classifier_parity('vit/vit/vit_tiny_p16_demo-64.py', 64, tmp_path)
    latency = ONNXRuntime(onnx_file).latency([np.random.default_rng(0).random((1, 3, 64, 64))], warmup=1, repeats=3)
    assert 0 < latency['min'] <= latency['median'] and latency['num_images'] == 1


def test_token_merging_classifier_parity(tmp_path):
    """ToMe sorts tokens: exercises the sort/argsort rewrite that ONNX Runtime can load."""
    check_classifier_parity('vit/tome_r8/tome_r8_tiny_p16_in1k-224.py', 224, tmp_path)


# One exporting config per taxonomy class of configs/vit/README.md and configs/hvit/README.md (the
# Fourier mixers, Nystromformer, ProbSparse, Switch and STViT do not export: docs/deploy.md says why).
TAXONOMY_CONFIGS = [
    'vit/vit/vit_tiny_p16_in1k-224.py',  # baseline
    'hvit/resnet/resnet50_in1k-224.py',  # convolutional baseline
    'vit/evit/evit_tiny_p16_in1k-224.py',  # token removal
    'vit/evit_fuse/evit_fuse_tiny_p16_in1k-224.py',  # token merging
    'vit/token_learner_8_50/token_learner_8_50_tiny_p16_in1k-224.py',  # summary tokens
    'vit/performer/performer_tiny_p16_in1k-224.py',  # kernel attention
    'vit/linformer/linformer_tiny_p16_in1k-224.py',  # low-rank attention
    'hvit/xcit/xcit_nano_12_p16_in1k-224.py',  # low-rank (cross-covariance) attention
    'vit/routing/routing_tiny_p16_in1k-224.py',  # sparse attention
    'hvit/swin/swin_tiny_p4_w7_in1k-224.py',  # sparse (windowed) attention
    'vit/synthesizer_fr/synthesizer_fr_tiny_p16_in1k-224.py',  # fixed attention
    'hvit/mixer/mixer_s16_in1k-224.py',  # non-attention shuffling
    'hvit/hivit/hivit_tiny_p16_in1k-224.py',  # MLP block
]


@pytest.mark.slow
@pytest.mark.parametrize('model_cfg', TAXONOMY_CONFIGS)
def test_efficient_vit_parity(model_cfg, tmp_path):
    check_classifier_parity(model_cfg, 224, tmp_path)


def test_tensorrt_cli_fails_fast_without_tensorrt(tmp_path):
    try:
        import tensorrt  # noqa: F401
        skip_for_hardware('TensorRT is installed: test_tensorrt_fp16_engine covers the path')
    except ImportError:
        pass
    proc = run_tool('tools/deploy.py', 'tensorrt', TRT_FP16, 'configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py',
                    str(tmp_path / 'end2end.engine'), check=False, timeout=300)
    assert proc.returncode != 0
    assert 'TensorRT is not installed' in proc.stderr
    assert not (tmp_path / 'end2end.onnx').exists()  # failed before exporting anything


def test_tensorrt_backend_fails_fast_without_tensorrt():
    """The backend imports without TensorRT; what needs an engine says why it cannot run."""
    try:
        import tensorrt  # noqa: F401
        skip_for_hardware('TensorRT is installed: test_tensorrt_fp16_engine covers the path')
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match='TensorRT is not installed'):
        TensorRT('end2end.engine')
    with pytest.raises(RuntimeError, match='TensorRT is not installed'):
        TensorRT.build('end2end.onnx', deploy_cfg(TRT_FP16), 'end2end.engine')


def test_tensorrt_fp16_engine(tmp_path):
    """The FP16 engine's detections match PyTorch's (one to one, FP16 bounds), then it is timed."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        skip_for_hardware('TensorRT is not installed (it needs an NVIDIA GPU); the engine build, parity and '
                          'latency path runs on GPU machines only')
    if not torch.cuda.is_available():
        skip_for_hardware('TensorRT is installed but torch sees no CUDA GPU')
    torch.manual_seed(0)
    model, cfg, _ = build_deploy_model(TRT_FP16, osp.join(REPO, 'configs', 'rtdetr_r18.py'))
    engine = TensorRT(export_for('tensorrt', model, cfg, str(tmp_path / 'end2end.engine'), device='cuda:0'))
    inputs = torch.rand(2, 3, 640, 640).numpy()
    report = detection_parity(model, cfg, engine, inputs, FP16_BOX_TOLERANCE, FP16_SCORE_TOLERANCE,
                              allow_top_k_swaps=True)
    print(f'RT-DETR-R18 TensorRT FP16 vs PyTorch, 640x640, {len(inputs)} images: '
          f'{report["num_dets"] - report["mismatched"]}/{report["num_dets"]} matched '
          f'({report["mismatched"]} swapped at the top-K cut), max |box diff| {report["box"]:.2e} px '
          f'(bound {FP16_BOX_TOLERANCE}), max |score diff| {report["score"]:.2e}, sorted scores '
          f'{report["sorted_score"]:.2e} (bound {FP16_SCORE_TOLERANCE})')
    assert report['agree'], report
    # FP16 swaps candidates at the cut only: most detections keep their partner (not measured).
    assert report['mismatched'] <= 0.1 * report['num_dets'], report
    latency = engine.latency([inputs[:1]], warmup=5, repeats=20)
    print(f'RT-DETR-R18 TensorRT FP16 640x640 batch 1: {1e3 * latency["median"]:.2f} ms')
    assert latency['median'] > 0


@pytest.mark.slow
def test_deploy_cli_export_and_compare(tmp_path):
    """``tools/deploy.py export`` and ``compare`` as a user runs them: the demo RT-DETR at 128x128."""
    small = deploy_cfg(ORT_STATIC, 128)
    small_cfg = tmp_path / 'detection_onnxruntime_static-128x128.py'
    small.dump(str(small_cfg))
    model_cfg = 'configs/rtdetr/rtdetr_r18vd_demo-256.py'
    onnx_file = tmp_path / 'export' / 'end2end.onnx'
    proc = run_tool('tools/deploy.py', 'export', str(small_cfg), model_cfg, str(onnx_file), timeout=600)
    assert proc.stdout.strip().splitlines()[-1] == str(onnx_file)
    graph = onnx.load(str(onnx_file)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert (graph.input[0].name, dims) == ('input', [1, 3, 128, 128])
    assert [o.name for o in graph.output] == ['dets', 'labels']
    assert {'GridSample', 'TopK'} <= op_types(str(onnx_file))
    out = ONNXRuntime(str(onnx_file)).run(np.random.default_rng(0).random((1, 3, 128, 128)))
    num_queries = Config.fromfile(osp.join(REPO, model_cfg)).model.test_cfg.max_per_img
    assert out['dets'].shape == (1, num_queries, 5) and out['labels'].shape == (1, num_queries)
    assert np.isfinite(out['dets']).all() and ((out['dets'][..., 4] >= 0) & (out['dets'][..., 4] <= 1)).all()

    work_dir = tmp_path / 'compare'
    proc = run_tool('tools/deploy.py', 'compare', str(small_cfg), model_cfg, '--work-dir', str(work_dir),
                    '--warmup', '0', '--repeats', '2', '--threads', '1', timeout=600)
    print(proc.stdout)
    lines = proc.stdout.splitlines()  # the table, possibly with mmdeploy's log lines between
    header = [line.split() for line in lines if line.startswith('model ')]
    assert header == [['model', 'input', 'threads', 'pytorch', 'ms', 'ort', 'ms', 'ort/pt']], lines
    rows = [line.split() for line in lines if line.startswith('rtdetr_r18vd_demo-256 ')]
    assert len(rows) == 1, lines
    name, shape, threads, pytorch_ms, ort_ms, ratio = rows[0]
    assert (name, shape, threads) == ('rtdetr_r18vd_demo-256', '1x3x128x128', '1')
    pytorch_ms, ort_ms, ratio = float(pytorch_ms), float(ort_ms), float(ratio)
    assert pytorch_ms > 0 and ort_ms > 0
    # The printed values are rounded to 0.1 ms and 0.01.
    assert ratio == pytest.approx(ort_ms / pytorch_ms, abs=0.01 + 0.1 * (1 + ratio) / pytorch_ms)
    assert (work_dir / 'rtdetr_r18vd_demo-256.onnx').is_file()


def test_swin_runs_in_pytorch_after_export(tmp_path):
    """mmdeploy restores the static method it rewrites (``ShiftWindowMSA.get_attn_mask``) as a plain
    function; the export puts the original back, so PyTorch Swin works after an export."""
    check_classifier_parity('hvit/swin/swin_tiny_p4_w7_in1k-224.py', 224, tmp_path)


def test_deploy_loads_mmengine_checkpoints_and_refuses_pickled_code(tmp_path):
    """An mmeff/mmengine training checkpoint (message hub objects) loads for export under torch's
    weights_only default; one with pickled code needs the explicit opt-in."""
    from fractions import Fraction

    from mmengine.logging import HistoryBuffer

    from mmeff.engine import UnsafeCheckpointError
    model_cfg = osp.join(REPO, 'configs', 'vit', 'vit', 'vit_tiny_p16_demo-64.py')
    model, _, _ = build_deploy_model(deploy_cfg(ORT_CLS, 64), model_cfg)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    trained = tmp_path / 'epoch_1.pth'
    loss = HistoryBuffer()
    loss.update(0.5)
    torch.save(dict(state_dict=state, message_hub=dict(loss=loss)), trained)
    loaded, _, _ = build_deploy_model(deploy_cfg(ORT_CLS, 64), model_cfg, str(trained))
    assert torch.equal(loaded.head.fc.weight, state['head.fc.weight'])
    unsafe = tmp_path / 'unsafe.pth'
    torch.save(dict(state_dict=state, meta=Fraction(1, 2)), unsafe)  # not an mmengine type: could be code
    with pytest.raises(UnsafeCheckpointError, match='--trust-checkpoint'):
        build_deploy_model(deploy_cfg(ORT_CLS, 64), model_cfg, str(unsafe))
    loaded, _, _ = build_deploy_model(deploy_cfg(ORT_CLS, 64), model_cfg, str(unsafe), trust_checkpoint=True)
    assert torch.equal(loaded.head.fc.weight, state['head.fc.weight'])


def test_cpu_peak_throughput_script(tmp_path):
    import json
    out = tmp_path / 'peak.json'
    run_tool('tools/analysis/cpu_peak_throughput.py', '--threads', '1', '--warmup', '0', '--repeats', '1',
             '--precisions', 'fp32', '--out', str(out))  # bf16 and int8: tests/test_precision.py
    rows = json.loads(out.read_text())['results']
    assert [r['operation'].split()[0] for r in rows] == ['gemm', 'conv3x3', 'conv3x3']
    assert rows[0]['gflop'] == pytest.approx(2 * 2048**3 / 1e9)
    assert all(r['pytorch_gflop_s'] > 0 and r['onnxruntime_gflop_s'] > 0 for r in rows)
