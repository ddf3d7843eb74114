"""A deployed model beside the PyTorch model it was exported from: the same outputs (parity).

Every backend's parity goes through here: :func:`pytorch_outputs` gives PyTorch's predictions in
the export's output format, :func:`match_detections` matches two sets of detections one to one,
:func:`detection_parity` runs a backend and PyTorch on the same images and matches them.
"""
from typing import Dict, Union

import mmengine
import numpy as np
import torch
import torch.nn as nn

from .backends import Backend


def pytorch_outputs(model: nn.Module, inputs: torch.Tensor,
                    deploy_cfg: mmengine.Config) -> Dict[str, np.ndarray]:
    """Eager PyTorch predictions in the export's output format, for parity checks.

    Detection: ``dets`` (B, K, 5) = x1, y1, x2, y2 in input pixels, score; ``labels`` (B, K).
    Classification: ``output`` (B, num_classes) class probabilities. Float32 whatever precision the
    model ran at (under autocast its outputs may be bf16 / fp16).
    """
    task = deploy_cfg.codebase_config.type
    with torch.no_grad():
        if task == 'mmdet':
            from mmdet.structures import DetDataSample
            img_shape = tuple(inputs.shape[2:])
            samples = [DetDataSample(metainfo=dict(img_shape=img_shape)) for _ in inputs]
            results = [r.pred_instances for r in model.predict(inputs, samples, rescale=False)]
            dets = [torch.cat([r.bboxes, r.scores[:, None]], -1) for r in results]
            return dict(dets=torch.stack(dets).float().cpu().numpy(),
                        labels=torch.stack([r.labels for r in results]).cpu().numpy())
        if task == 'mmpretrain':
            results = model.predict(inputs)
            return dict(output=torch.stack([r.pred_score for r in results]).float().cpu().numpy())
    raise ValueError(f'codebase_config.type={task!r}: mmeff.deploy compares mmdet and mmpretrain '
                     f'models only.')


def match_detections(dets: np.ndarray, labels: np.ndarray, ref_dets: np.ndarray,
                     ref_labels: np.ndarray, box_tol: float, score_tol: float,
                     allow_top_k_swaps: bool = False) -> Dict[str, Union[float, int, bool]]:
    """Match two backends' detections of the same images one to one and measure their differences.

    Any backend against PyTorch (:func:`pytorch_outputs`), or two backends. Rows are matched, not
    compared in order, because scores that differ by a rounding error may reorder the top-K. Per
    image, a pair *agrees* when both rows have the same label, their boxes are within ``box_tol``
    (max abs coordinate difference) and their scores within ``score_tol``; the pairing maximizes the
    number of agreeing pairs (then minimizes their differences) with each row used once
    (``scipy.optimize.linear_sum_assignment``), so an output that repeats one detection agrees on
    one row only.

    With ``allow_top_k_swaps``, rows left without an agreeing partner are accepted when both rows of
    the pair lie within ``2 * score_tol`` of their own output's lowest score: a score error of
    ``score_tol`` can move a candidate across the top-K cut (one output keeps it, the other keeps its
    neighbour). The sorted score vectors must still agree element-wise within ``score_tol`` (which
    any two top-K selections do when every candidate's score is within ``score_tol``), so an output
    of repeated or shifted scores does not pass as "swaps at the cut".

    Args:
        dets (np.ndarray): (B, K, 5) x1, y1, x2, y2, score (or (K, 5) for one image).
        labels (np.ndarray): (B, K) (or (K, )).
        ref_dets, ref_labels: the reference, same shapes.
        box_tol (float): Pixels.
        score_tol (float): Absolute score difference.
        allow_top_k_swaps (bool): See above; off for FP32 backends, on for FP16.

    Returns:
        dict: ``num_dets`` (B * K); ``box``, ``score``: max abs differences over the agreeing pairs;
        ``sorted_score``: max abs difference of the sorted score vectors; ``mismatched``: pairs that
        do not agree; ``mismatched_off_cut``: those of them not explained by the top-K cut;
        ``agree``: whether the outputs agree (``sorted_score <= score_tol`` and no mismatched pair,
        or with ``allow_top_k_swaps`` none off the cut).

    Raises:
        ValueError: the outputs have different shapes (numbers of detections).
    """
    from scipy.optimize import linear_sum_assignment
    dets, labels = np.asarray(dets, dtype=np.float64), np.asarray(labels)
    ref_dets, ref_labels = np.asarray(ref_dets, dtype=np.float64), np.asarray(ref_labels)
    if dets.ndim == 2:
        dets, labels, ref_dets, ref_labels = dets[None], labels[None], ref_dets[None], ref_labels[None]
    if dets.shape != ref_dets.shape or labels.shape != ref_labels.shape or dets.shape[:2] != labels.shape:
        raise ValueError(f'different numbers of detections: dets {dets.shape}, labels {labels.shape}; '
                         f'reference dets {ref_dets.shape}, labels {ref_labels.shape}')
    if dets.shape[-1] != 5:
        raise ValueError(f'dets must be (B, K, 5) x1, y1, x2, y2, score; got {dets.shape}')
    box = score = sorted_score = 0.0
    mismatched = mismatched_off_cut = 0
    for det, label, ref_det, ref_label in zip(dets, labels, ref_dets, ref_labels):
        num = len(det)
        if num == 0:
            continue
        box_dist = np.abs(det[:, None, :4] - ref_det[None, :, :4]).max(-1)  # (K, K)
        score_dist = np.abs(det[:, None, 4] - ref_det[None, :, 4])
        agrees = (label[:, None] == ref_label[None, :]) & (box_dist <= box_tol) & (score_dist <= score_tol)
        # One agreeing pair more always beats any gain within the agreeing pairs (each costs <= 1).
        cost = np.where(agrees, np.maximum(box_dist / box_tol, score_dist / score_tol), num + 1.0)
        rows, cols = linear_sum_assignment(cost)
        good = agrees[rows, cols]
        box = max(box, float(box_dist[rows, cols][good].max(initial=0.0)))
        score = max(score, float(score_dist[rows, cols][good].max(initial=0.0)))
        sorted_diff = np.abs(np.sort(det[:, 4]) - np.sort(ref_det[:, 4]))
        sorted_score = max(sorted_score, float(np.nan_to_num(sorted_diff, nan=np.inf).max()))
        at_cut = ((det[rows, 4] <= det[:, 4].min() + 2 * score_tol) &
                  (ref_det[cols, 4] <= ref_det[:, 4].min() + 2 * score_tol))
        mismatched += int((~good).sum())
        mismatched_off_cut += int((~good & ~at_cut).sum())
    unexplained = mismatched_off_cut if allow_top_k_swaps else mismatched
    agree = bool(sorted_score <= score_tol and unexplained == 0)
    return dict(num_dets=int(np.prod(labels.shape)), box=box, score=score, sorted_score=sorted_score,
                mismatched=mismatched, mismatched_off_cut=mismatched_off_cut, agree=agree)


def detection_parity(model: nn.Module, deploy_cfg: mmengine.Config, backend: Backend, inputs: np.ndarray,
                     box_tol: float, score_tol: float,
                     allow_top_k_swaps: bool = False) -> Dict[str, Union[float, int, bool]]:
    """``backend`` (loaded with the export of ``model``, :func:`~mmeff.deploy.build_deploy_model`)
    against ``model`` itself on the same ``inputs`` (N, 3, H, W): :func:`match_detections` of their
    detections (FP16 backends: ``allow_top_k_swaps``)."""
    if deploy_cfg.codebase_config.type != 'mmdet':
        raise ValueError(f'codebase_config.type={deploy_cfg.codebase_config.type!r}: '
                         'detection_parity compares detectors (mmdet) only.')
    inputs = np.asarray(inputs, dtype=np.float32)
    deployed = backend.run(inputs)
    device = next(model.parameters()).device
    reference = pytorch_outputs(model, torch.from_numpy(inputs).to(device), deploy_cfg)
    return match_detections(deployed['dets'], deployed['labels'], reference['dets'], reference['labels'], box_tol,
                            score_tol, allow_top_k_swaps)
