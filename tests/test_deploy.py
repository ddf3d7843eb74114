"""Deployment: deploy configs, the mmdeploy/torch compatibility guard, ONNX export of RT-DETR and
a ViT classifier through mmdeploy, ONNX Runtime parity with PyTorch, the TensorRT path."""
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import run_tool
from mmengine import Config

pytest.importorskip('mmdeploy', reason='the deploy extra is not installed: pip install -e .[deploy]')
onnx = pytest.importorskip('onnx', reason='the deploy extra is not installed')
pytest.importorskip('onnxruntime', reason='the deploy extra is not installed')

from mmeff.deploy import build_deploy_model, check_deploy_stack, export_onnx  # noqa: E402
from mmeff.deploy import compat  # noqa: E402
from mmeff.deploy.compare import pytorch_outputs  # noqa: E402
from mmeff.deploy.runtime import create_session, onnxruntime_latency, run_session  # noqa: E402
from mmeff.models.layers.repvgg import RepVGGBlock  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEPLOY_DIR = osp.join(REPO, 'configs', 'deploy')
ORT_STATIC = osp.join(DEPLOY_DIR, 'detection_onnxruntime_static-640x640.py')
ORT_DYNAMIC = osp.join(DEPLOY_DIR, 'detection_onnxruntime_dynamic-batch-640x640.py')
TRT_FP16 = osp.join(DEPLOY_DIR, 'detection_tensorrt-fp16_static-640x640.py')
ORT_CLS = osp.join(DEPLOY_DIR, 'classification_onnxruntime_static-224x224.py')
TOLERANCE = 1e-3


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


def max_abs_diffs(ort_out, torch_out):
    """Box (pixels) and score max abs diffs between each ONNX Runtime detection and the PyTorch
    detection of the same class with the nearest box.

    Matched, not compared row by row: with random weights many scores differ by ~1e-7, so float
    rounding may swap neighbours in the top-K order without changing the detections.
    """
    box_diff = score_diff = 0.0
    for ort_dets, ort_labels, ref_dets, ref_labels in zip(ort_out['dets'], ort_out['labels'],
                                                          torch_out['dets'], torch_out['labels']):
        distance = np.abs(ort_dets[:, None, :4] - ref_dets[None, :, :4]).max(-1)  # (K, K)
        distance[ort_labels[:, None] != ref_labels[None, :]] = np.inf
        nearest = distance.argmin(1)
        box_diff = max(box_diff, float(distance[np.arange(len(nearest)), nearest].max()))
        score_diff = max(score_diff, float(np.abs(ort_dets[:, 4] - ref_dets[nearest, 4]).max()))
    return box_diff, score_diff


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
    ort_out = run_session(create_session(onnx_file), inputs.numpy())
    torch_out = pytorch_outputs(model, inputs, cfg)
    num_queries = model.test_cfg['max_per_img']
    assert ort_out['dets'].shape == (batch_size, num_queries, 5)
    assert ort_out['labels'].shape == (batch_size, num_queries)
    box, score = max_abs_diffs(ort_out, torch_out)
    print(f'{model_cfg} {size}x{size} batch {batch_size} eval_idx {eval_idx}: '
          f'max |box diff| {box:.2e} px, max |score diff| {score:.2e}')
    assert box < TOLERANCE and score < TOLERANCE
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


def check_classifier_parity(model_cfg, size, tmp_path):
    torch.manual_seed(0)
    cfg = deploy_cfg(ORT_CLS, size)
    model, cfg, _ = build_deploy_model(cfg, osp.join(REPO, 'configs', model_cfg))
    # A unit-variance head: the initialized one gives near-uniform probabilities, which would
    # hide any difference in the features.
    torch.nn.init.normal_(model.head.fc.weight)
    onnx_file = export_onnx(model, cfg, str(tmp_path / 'end2end.onnx'))
    inputs = torch.rand(2, 3, size, size)
    session = create_session(onnx_file)
    # The classification graph is static at batch 1.
    ort_out = np.concatenate([run_session(session, x[None].numpy())['output'] for x in inputs])
    torch_out = pytorch_outputs(model, inputs, cfg)['output']
    diff = float(np.abs(ort_out - torch_out).max())
    print(f'{model_cfg} {size}x{size}: max |probability diff| {diff:.2e}, '
          f'top-1 prob {torch_out.max():.3f}')
    assert diff < TOLERANCE
    return onnx_file


def test_vit_classifier_parity_and_latency(tmp_path):
    onnx_file = check_classifier_parity('vit/vit/vit_tiny_p16_demo-64.py', 64, tmp_path)
    latency = onnxruntime_latency(onnx_file, (1, 3, 64, 64), warmup=1, repeats=3)
    assert 0 < latency['min'] <= latency['median']


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
        pytest.skip('TensorRT is installed: test_tensorrt_fp16_engine covers the path')
    except ImportError:
        pass
    proc = run_tool('tools/deploy.py', 'tensorrt', TRT_FP16, 'configs/rtdetr_r18.py',
                    str(tmp_path / 'end2end.engine'), check=False, timeout=300)
    assert proc.returncode != 0
    assert 'TensorRT is not installed' in proc.stderr
    assert not (tmp_path / 'end2end.onnx').exists()  # failed before exporting anything


def test_tensorrt_fp16_engine(tmp_path):
    pytest.importorskip('tensorrt', reason='TensorRT is not installed (it needs an NVIDIA GPU); '
                        'the engine build and latency path runs on GPU machines only')
    if not torch.cuda.is_available():
        pytest.skip('TensorRT is installed but torch sees no CUDA GPU')
    from mmeff.deploy.tensorrt import build_engine, tensorrt_latency
    model, cfg, _ = build_deploy_model(TRT_FP16, osp.join(REPO, 'configs', 'rtdetr_r18.py'))
    onnx_file = export_onnx(model, cfg, str(tmp_path / 'end2end.onnx'))
    engine = build_engine(onnx_file, cfg, str(tmp_path / 'end2end.engine'))
    latency = tensorrt_latency(engine, warmup=5, repeats=20)
    print(f'RT-DETR-R18 TensorRT FP16 640x640 batch 1: {1e3 * latency["median"]:.2f} ms')
    assert latency['median'] > 0


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
             '--out', str(out))
    rows = json.loads(out.read_text())['results']
    assert [r['operation'].split()[0] for r in rows] == ['gemm', 'conv3x3', 'conv3x3']
    assert rows[0]['gflop'] == pytest.approx(2 * 2048**3 / 1e9)
    assert all(r['pytorch_gflop_s'] > 0 and r['onnxruntime_gflop_s'] > 0 for r in rows)
