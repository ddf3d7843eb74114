"""Run a detector or a classifier on images; draw and save what it predicts.

    python demo/image_demo.py INPUTS CONFIG --weights CHECKPOINT [--out-dir outputs] [--device cpu]
                              [--score-thr 0.3] [--topk 5] [--rescale-factor F] [--precision fp32|bf16]
                              [--batch-size 1]
                              [--show] [--no-save-vis] [--no-save-pred] [--trust-checkpoint]

INPUTS is an image, a folder (its images) or a .txt file listing images, one a line (relative to the
list's folder). The config's ``default_scope`` picks the inferencer:

* mmdet: ``DetInferencer``. OUT_DIR/vis/<image>: the boxes scoring above --score-thr, with their class
  names and scores; OUT_DIR/preds/<image stem>.json: ``labels``, ``scores``, ``bboxes`` of every box.
* mmpretrain: ``ImageClassificationInferencer``. OUT_DIR/vis/<image stem>.png: the --topk classes and
  their scores; OUT_DIR/preds/<image stem>.json: ``pred_label``, ``pred_score``, ``pred_class`` and
  ``topk`` (``labels``, ``scores``, ``classes``).

On the bundled demo data (``tools/train.py configs/rtdetr/rtdetr_r18vd_demo-256.py`` writes the checkpoint):

    python demo/image_demo.py ~/.cache/mmeff/demo_coco_v1/val configs/rtdetr/rtdetr_r18vd_demo-256.py \\
        --weights work_dirs/rtdetr_r18vd_demo-256/epoch_8.pth --device cpu
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch
from mmdet.apis import DetInferencer
from mmdet.apis.det_inferencer import IMG_EXTENSIONS
from mmengine.config import Config
from mmengine.device import get_device
from mmpretrain.apis import ImageClassificationInferencer

import mmeff  # noqa: F401  (registers mmeff's modules and the checkpoint types torch may load)
from mmeff.engine import UnsafeCheckpointError, checkpoint_loading, float32_predictions
from mmeff.utils.precision import PRECISIONS, PrecisionUnsupported, autocast, check_precision


def list_images(inputs: str) -> list:
    """The images INPUTS names: itself, a folder's images (sorted), or a .txt list's lines."""
    if osp.isdir(inputs):
        return sorted(osp.join(inputs, name) for name in os.listdir(inputs) if name.lower().endswith(IMG_EXTENSIONS))
    if inputs.endswith('.txt'):
        with open(inputs) as f:
            return [osp.join(osp.dirname(inputs), line.strip()) for line in f if line.strip()]
    return [inputs]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Draw and save the predictions of a detector or a classifier')
    parser.add_argument('inputs', help='an image, a folder of images, or a .txt file listing images (one a line)')
    parser.add_argument('config', help='the model config (an mmdet detector or an mmpretrain classifier)')
    parser.add_argument('--weights', help='the checkpoint (without it the weights are random)')
    parser.add_argument('--out-dir', default='outputs', help='where vis/ (pictures) and preds/ (json) go')
    parser.add_argument('--device', help='cpu, cuda, cuda:1, ... (default: cuda if there is one, else cpu)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detectors: draw the boxes scoring above it')
    parser.add_argument('--topk', type=int, default=5, help='classifiers: draw and save the k best classes')
    parser.add_argument('--rescale-factor', type=float,
                        help='classifiers: scale the picture before drawing on it (small images: e.g. 4)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='run the model under autocast (bf16: CPUs with AVX512-BF16 / AMX, or CUDA)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--show', action='store_true', help='display each picture in a window')
    parser.add_argument('--no-save-vis', action='store_true', help='do not save the pictures')
    parser.add_argument('--no-save-pred', action='store_true', help='do not save the predictions (json)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load a checkpoint that holds arbitrary pickled objects (only from a trusted source)')
    args = parser.parse_args(argv)
    if not osp.exists(args.inputs):
        parser.error(f'input not found: {args.inputs} (give an image, a folder of images or a .txt list of images)')
    images = list_images(args.inputs)
    if not images:
        parser.error(f'no images in {args.inputs} (looked for {", ".join(IMG_EXTENSIONS)})')
    missing = [image for image in images if not osp.isfile(image)]
    if missing:
        parser.error(f'{len(missing)} image(s) listed in {args.inputs} not found, e.g. {missing[0]}')
    if not osp.isfile(args.config):
        parser.error(f'config not found: {args.config} (e.g. configs/rtdetr/rtdetr_r18vd_demo-256.py)')
    if args.weights is not None and not osp.isfile(args.weights):
        parser.error(f'checkpoint not found: {args.weights} (tools/train.py writes WORK_DIR/epoch_N.pth; '
                     'tools/convert_*.py convert published weights)')
    if args.topk < 1:
        parser.error(f'--topk must be at least 1, got {args.topk}')
    return args, images


def run_forward_at(inferencer, precision: str, device: str, topk: int = 0) -> None:
    """The inferencer's forward under autocast at ``precision``, its predictions back in float32; a
    classifier's ``pred_label`` becomes its ``topk`` best classes, which its visualizer draws."""
    forward = inferencer.forward

    def run(inputs, **kwargs):
        with autocast(precision, device):
            preds = [float32_predictions(pred) for pred in forward(inputs, **kwargs)]
        if topk:
            for pred in preds:
                pred.set_pred_label(pred.pred_score.topk(min(topk, pred.pred_score.numel())).indices)
        return preds

    inferencer.forward = run


def save_class_predictions(images: list, results: list, classes, topk: int, pred_dir: str) -> None:
    os.makedirs(pred_dir, exist_ok=True)
    for image, result in zip(images, results):
        scores = torch.from_numpy(result.pop('pred_scores'))
        best = scores.topk(min(topk, scores.numel()))
        result['topk'] = dict(labels=best.indices.tolist(), scores=best.values.tolist())
        if classes is not None:
            result['topk']['classes'] = [classes[i] for i in best.indices.tolist()]
        with open(osp.join(pred_dir, osp.splitext(osp.basename(image))[0] + '.json'), 'w') as f:
            json.dump(result, f, indent=2)


def main(argv=None):
    args, images = parse_args(argv)
    device = args.device or get_device()
    try:
        check_precision(args.precision, device)  # refused before anything is built
    except PrecisionUnsupported as e:
        sys.exit(f'--precision {args.precision}: {e}')
    cfg = Config.fromfile(args.config)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmpretrain'):
        sys.exit(f'{args.config} has default_scope={scope!r}: this demo runs mmdet detectors and mmpretrain '
                 'classifiers (set default_scope to mmdet or mmpretrain)')
    if args.weights is None:
        print('no --weights: the model has random weights, its predictions mean nothing', file=sys.stderr)
    try:
        with checkpoint_loading(args.trust_checkpoint or cfg.get('trust_checkpoint', False)):
            if scope == 'mmdet':
                inferencer = DetInferencer(cfg, args.weights, device)
            else:
                inferencer = ImageClassificationInferencer(cfg, pretrained=args.weights, device=device)
    except UnsafeCheckpointError as e:
        sys.exit(f'{args.weights}: {e}\nHere: add --trust-checkpoint (only for a file whose origin you trust).')
    run_forward_at(inferencer, args.precision, device, topk=args.topk if scope == 'mmpretrain' else 0)

    vis_dir, pred_dir = osp.join(args.out_dir, 'vis'), osp.join(args.out_dir, 'preds')
    if scope == 'mmdet':
        inferencer(images, batch_size=args.batch_size, show=args.show, pred_score_thr=args.score_thr,
                   out_dir=args.out_dir, no_save_vis=args.no_save_vis, no_save_pred=args.no_save_pred)
    else:
        if not args.no_save_vis:
            os.makedirs(vis_dir, exist_ok=True)
        results = inferencer(images, batch_size=args.batch_size, show=args.show, rescale_factor=args.rescale_factor,
                             show_dir=None if args.no_save_vis else vis_dir)
        if not args.no_save_pred:
            save_class_predictions(images, results, inferencer.classes, args.topk, pred_dir)
    if not args.no_save_vis:
        print(f'pictures of the predictions on {len(images)} image(s): {vis_dir}')
    if not args.no_save_pred:
        print(f'predictions (json): {pred_dir}')


if __name__ == '__main__':
    main()
