"""What each part of RT-DETR costs when NNCF quantizes it: OpenVINO INT8 builds of a trained detector with
one ignored scope each (kept in f32), their COCO mAP on the model config's val set and their detections
against PyTorch FP32 (docs/deploy.md#int8-nncf-post-training-quantization records a run).

    python tools/analysis/openvino_int8_scopes.py MODEL_CFG CHECKPOINT [--size 256] [--calib-dataset CFG]
        [--calib-images 100] [--variants fp32 bf16 none decoder ...] [--work-dir DIR]
"""
import argparse
import copy

import torch
from mmengine import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmeff.deploy import build_deploy_model, export_onnx, match_detections, pytorch_outputs
from mmeff.deploy.backends import OpenVINO

DEPLOY_CFG = 'configs/deploy/detection_openvino-int8_static-640x640.py'
# Node-name patterns (nncf.IgnoredScope(patterns=...), matched from the start) of RT-DETR's parts.
SCOPES = {
    'decoder': ['/decoder/.*'],
    'cross_attn': [r'/decoder/layers\.\d+/cross_attn/.*'],  # what feeds GridSample
    'query_select': ['/enc_output/.*', r'/cls_branches\.\d+/.*', r'/reg_branches\.\d+/.*'],  # encoder top-K
    'heads': ['/bbox_head/.*'],  # the decoder's heads, before the final top-K
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model_cfg')
    parser.add_argument('checkpoint')
    parser.add_argument('--size', type=int, default=256, help='the graph\'s input size (square)')
    parser.add_argument('--calib-dataset', help='config whose test_dataloader.dataset calibrates (default: the '
                        'model config\'s test set)')
    parser.add_argument('--calib-images', type=int, default=100)
    parser.add_argument('--variants', nargs='+', default=['fp32', 'bf16', 'none', *SCOPES, 'notransformer'],
                        help='fp32, bf16, none (INT8, nothing ignored), a part of SCOPES or parts joined by "+", '
                        'notransformer (INT8 without nncf.ModelType.TRANSFORMER)')
    parser.add_argument('--work-dir', default='work_dirs/openvino_int8_scopes')
    return parser.parse_args()


def variant_cfg(deploy_cfg, variant, args):
    """The deploy config of one variant."""
    cfg = copy.deepcopy(deploy_cfg)
    if variant in ('fp32', 'bf16'):
        cfg.backend_config.precision = variant
        return cfg
    calibration = cfg.backend_config.calibration
    calibration.num_images = args.calib_images
    if args.calib_dataset:
        calibration.dataset = args.calib_dataset
    if variant == 'notransformer':
        calibration.model_type = None
    elif variant != 'none':
        calibration.ignored_scope = dict(patterns=[p for part in variant.split('+') for p in SCOPES[part]])
    return cfg


def evaluate(model, deploy_cfg, loader, backend=None):
    """COCO mAP of ``backend`` (PyTorch when None) on ``loader``, and its detections against PyTorch's."""
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(metric='bbox')
    metric.dataset_meta = loader.dataset.metainfo
    mismatched = num_dets = 0
    top10 = 0.0
    for data in loader:
        data = model.data_preprocessor(data, False)
        ref = pytorch_outputs(model, data['inputs'], deploy_cfg)
        out = backend.run(data['inputs'].numpy()) if backend else ref
        report = match_detections(out['dets'], out['labels'], ref['dets'], ref['labels'], 2.0, 0.02)
        mismatched, num_dets = mismatched + report['mismatched'], num_dets + report['num_dets']
        top = [(d[..., 4].sort(-1).values[:, -10:]) for d in (torch.from_numpy(out['dets']),
                                                              torch.from_numpy(ref['dets']))]
        top10 = max(top10, float((top[0] - top[1]).abs().max()))
        samples = []
        for i, sample in enumerate(data['data_samples']):
            dets = torch.from_numpy(out['dets'][i])
            scale = torch.tensor(sample.scale_factor).repeat(2)  # back to the original image
            samples.append(dict(img_id=sample.img_id, ori_shape=sample.ori_shape, instances=sample.instances,
                                pred_instances=dict(bboxes=dets[:, :4] / scale, scores=dets[:, 4],
                                                    labels=torch.from_numpy(out['labels'][i]))))
        metric.process({}, samples)
    return dict(mAP=metric.evaluate(len(loader.dataset))['coco/bbox_mAP'], mismatched=mismatched,
                num_dets=num_dets, top10_score=top10)


def main():
    args = parse_args()
    deploy_cfg = Config.fromfile(DEPLOY_CFG)
    deploy_cfg.onnx_config.input_shape = [args.size, args.size]
    model, deploy_cfg, model_cfg = build_deploy_model(deploy_cfg, args.model_cfg, args.checkpoint)
    onnx_file = export_onnx(model, deploy_cfg, f'{args.work_dir}/end2end.onnx')
    loader_cfg = dict(model_cfg.val_dataloader.to_dict(), num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(loader_cfg)
    rows = [('pytorch fp32', evaluate(model, deploy_cfg, loader))]
    for variant in args.variants:
        cfg = variant_cfg(deploy_cfg, variant, args)
        xml = OpenVINO.build(onnx_file, cfg, f'{args.work_dir}/{variant}.xml', model_cfg=model_cfg)
        rows.append((variant, evaluate(model, deploy_cfg, loader, OpenVINO(xml))))
    print(f'{"variant":<32} {"mAP":>6} {"mismatched":>12} {"top-10 score diff":>18}')
    for variant, r in rows:
        print(f'{variant:<32} {r["mAP"]:>6.3f} {r["mismatched"]:>5}/{r["num_dets"]:<6} {r["top10_score"]:>18.3f}')


if __name__ == '__main__':
    main()
