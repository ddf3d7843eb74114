"""End-to-end detection latency (the RT-DETR paper, section 3): model plus post-processing.

Over the first ``num_images`` images of the config's test set (loaded and preprocessed outside the
timings), each image is timed once for:

- ``model``: the network up to the head's raw outputs (``mode='tensor'``);
- ``post``: the head's post-processing of those outputs (``bbox_head.predict_by_feat``): score
  threshold, top-k, box decoding and NMS for NMS-based detectors, top-K for DETRs;
- ``nms``: the time spent inside ``batched_nms`` during ``post``, and how many boxes went in;
- ``end2end``: the whole ``mode='predict'`` call.

For NMS-based heads, ``post`` and ``nms`` are repeated for every (score threshold, IoU threshold)
pair on the same raw outputs. Times are means over the images, in milliseconds.
"""
import copy
import itertools
import os
import sys
import time
from contextlib import ExitStack, contextmanager, redirect_stdout
from typing import Dict, List, Optional, Sequence
from unittest import mock

import mmcv.ops
import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, DefaultScope
from mmengine.runner import load_checkpoint
from terminaltables import AsciiTable

from mmeff.engine.checkpoint import checkpoint_loading
from mmeff.utils.timing import describe_error, synchronize

from .subject import Subject, load_config


@contextmanager
def timed_nms(device: str):
    """Time and count every ``batched_nms`` call of mmdet's heads (they call it from inside their
    post-processing, with no hook around it)."""
    calls = dict(seconds=0.0, boxes_in=0, boxes_kept=0)
    original = mmcv.ops.batched_nms

    def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
        synchronize(device)
        start = time.perf_counter()
        dets, keep = original(boxes, scores, idxs, nms_cfg, class_agnostic)
        synchronize(device)
        calls['seconds'] += time.perf_counter() - start
        calls['boxes_in'] += len(boxes)
        calls['boxes_kept'] += len(keep)
        return dets, keep

    with ExitStack() as stack:
        for module in [m for name, m in sys.modules.items() if name.startswith('mmdet.')]:
            if getattr(module, 'batched_nms', None) is original:
                stack.enter_context(mock.patch.object(module, 'batched_nms', batched_nms))
        yield calls


def _timed(fn, device: str):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def _test_images(cfg, num_images: int):
    """The first ``num_images`` samples of the config's test set."""
    # pycocotools prints its progress to stdout, which is for the tables
    with DefaultScope.overwrite_default_scope(cfg.default_scope), redirect_stdout(sys.stderr):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return [dataset[i] for i in range(min(num_images, len(dataset)))]


def nms_thresholds(test_cfg, score_thrs: Optional[Sequence[float]], iou_thrs: Optional[Sequence[float]]):
    """Test configs for every (score, IoU) threshold pair; the config's own if none are given.
    Heads without NMS (DETRs) keep their own test config."""
    if 'nms' not in test_cfg:
        return [test_cfg]
    cfgs = []
    for score_thr, iou_thr in itertools.product(score_thrs or [test_cfg.get('score_thr', 0.0)],
                                                iou_thrs or [test_cfg.nms.iou_threshold]):
        cfg = copy.deepcopy(test_cfg)
        cfg.score_thr, cfg.nms.iou_threshold = score_thr, iou_thr
        cfgs.append(cfg)
    return cfgs


def detection_end2end(config: str, cfg_options: Optional[dict] = None, device: str = 'cpu', num_images: int = 20,
                      warmup: int = 5, score_thrs: Optional[Sequence[float]] = None,
                      iou_thrs: Optional[Sequence[float]] = None, checkpoint: Optional[str] = None,
                      trust_checkpoint: bool = False) -> Dict:
    """Model, post-processing, NMS and end-to-end times of a single-stage or DETR detector (see
    module doc). Errors are returned as ``{'error': reason}``, like the other metrics. The
    checkpoint loads as in mmeff's runner (any pickle only with ``trust_checkpoint``)."""
    try:
        cfg = load_config(config, cfg_options)
        subject = Subject(cfg, (1, ), device)  # no synthetic inputs: the images come from the test set
        if subject.task != 'det':
            raise TypeError('end-to-end latency is for detectors')
        model, head = subject.model, getattr(subject.model, 'bbox_head', None)
        if head is None or not hasattr(head, 'predict_by_feat'):
            raise TypeError(f'{type(model).__name__} has no bbox_head.predict_by_feat (two-stage detectors '
                            'post-process inside their RoI head): only single-stage and DETR detectors')
        if checkpoint:
            with checkpoint_loading(trust_checkpoint):
                load_checkpoint(model, checkpoint, map_location='cpu')
        batches = [model.data_preprocessor(pseudo_collate([sample]), False) for sample in _test_images(cfg, num_images)]
    except Exception as error:
        return dict(error=describe_error(error))

    test_cfgs = nms_thresholds(head.test_cfg, score_thrs, iou_thrs)
    # DETR heads take no cfg argument: they read head.test_cfg.
    cfg_kwarg = (lambda cfg: dict(cfg=cfg)) if 'nms' in head.test_cfg else (lambda cfg: {})
    times = dict(model=[], end2end=[])
    post = [dict(seconds=[], nms_seconds=[], boxes_in=[], boxes_kept=[]) for _ in test_cfgs]
    with torch.no_grad():
        first = batches[0]
        for _ in range(warmup):
            model(first['inputs'], first['data_samples'], mode='predict')
        for batch in batches:
            inputs, samples = batch['inputs'], batch['data_samples']
            metas = [s.metainfo for s in samples]
            outs, seconds = _timed(lambda: model(inputs, samples, mode='tensor'), device)
            times['model'].append(seconds)
            times['end2end'].append(_timed(lambda: model(inputs, samples, mode='predict'), device)[1])
            for test_cfg, record in zip(test_cfgs, post):
                with timed_nms(device) as nms:
                    _, seconds = _timed(lambda: head.predict_by_feat(
                        *outs, batch_img_metas=metas, rescale=True, **cfg_kwarg(test_cfg)), device)
                record['seconds'].append(seconds)
                record['nms_seconds'].append(nms['seconds'])
                record['boxes_in'].append(nms['boxes_in'])
                record['boxes_kept'].append(nms['boxes_kept'])
    mean_ms = lambda values: float(np.mean(values) * 1e3)  # noqa: E731
    return dict(
        images=len(batches), warmup=warmup, input_shape=list(batches[0]['inputs'].shape[-2:]),
        model_ms=mean_ms(times['model']), end2end_ms=mean_ms(times['end2end']), has_nms='nms' in head.test_cfg,
        post=[dict(score_thr=cfg.get('score_thr'), iou_thr=cfg.nms.iou_threshold if 'nms' in cfg else None,
                   post_ms=mean_ms(r['seconds']), nms_ms=mean_ms(r['nms_seconds']),
                   boxes_before_nms=float(np.mean(r['boxes_in'])), boxes_kept=float(np.mean(r['boxes_kept'])))
              for cfg, r in zip(test_cfgs, post)])


def format_end2end(results: Sequence[Dict]) -> str:
    """One row per (model, thresholds)."""
    rows = [['name', 'images', 'model_ms', 'end2end_ms', 'score_thr', 'iou_thr', 'post_ms', 'nms_ms',
             'boxes_before_nms', 'boxes_kept']]
    for result in results:
        e2e = result.get('end2end', {})
        if 'error' in e2e:
            rows.append([result['name'], e2e['error']] + [''] * 8)
            continue
        for p in e2e.get('post', []):
            rows.append([result['name'], e2e['images'], f'{e2e["model_ms"]:.2f}', f'{e2e["end2end_ms"]:.2f}',
                         p['score_thr'], p['iou_thr'], f'{p["post_ms"]:.2f}', f'{p["nms_ms"]:.2f}',
                         f'{p["boxes_before_nms"]:.0f}', f'{p["boxes_kept"]:.0f}'])
    return 'End-to-end detection latency (ms, mean per image):\n' + AsciiTable(rows).table


def plot_end2end(results: Sequence[Dict], out_dir: str) -> List[str]:
    """PNGs of the end-to-end runs: per NMS detector, NMS time and boxes entering NMS against the
    score threshold (a line per IoU threshold); per swept config (``name@key=value`` runs, e.g.
    RT-DETR's ``eval_idx``), end-to-end latency and, where given, accuracy against the swept value.
    Returns the paths written."""
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    done = [r for r in results if 'post' in r.get('end2end', {})]
    for result in (r for r in done if r['end2end']['has_nms']):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        posts = result['end2end']['post']
        for iou_thr in sorted({p['iou_thr'] for p in posts}):
            points = sorted((p['score_thr'], p['nms_ms'],
                             p['boxes_before_nms']) for p in posts if p['iou_thr'] == iou_thr)
            score_thrs, nms_ms, boxes = zip(*points)
            axes[0].plot(score_thrs, nms_ms, marker='o', label=f'IoU thr {iou_thr}')
            axes[1].plot(score_thrs, boxes, marker='o', label=f'IoU thr {iou_thr}')
        for ax, label in zip(axes, ('NMS time per image (ms)', 'boxes entering NMS per image')):
            ax.set_xscale('log')
            ax.set_xlabel('score threshold')
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{result['name']}: model {result['end2end']['model_ms']:.1f} ms, "
                     f"end to end {result['end2end']['end2end_ms']:.1f} ms")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"nms_vs_thresholds_{result['name']}.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    groups: Dict[str, List[Dict]] = {}
    for result in done:
        if '@' in result['name']:
            groups.setdefault(result['name'].split('@')[0], []).append(result)
    for base, runs in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [r['name'].split('@', 1)[1] for r in runs]
        ax.plot(labels, [r['end2end']['end2end_ms'] for r in runs], marker='o', color='tab:blue')
        ax.set_ylabel('end-to-end latency per image (ms)', color='tab:blue')
        ax.set_xlabel('swept setting')
        if all('accuracy' in r for r in runs):
            twin = ax.twinx()
            twin.plot(labels, [r['accuracy'] for r in runs], marker='s', color='tab:red')
            twin.set_ylabel('accuracy', color='tab:red')
        ax.set_title(base)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f'end2end_sweep_{base}.png'))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
