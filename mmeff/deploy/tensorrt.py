"""TensorRT engines from the ONNX export, and their latency (GPU machines with TensorRT only).

The RT-DETR paper's protocol (Sec. 5.1): TensorRT FP16 on a T4, batch 1, 640x640, latency
averaged over COCO val images, pre-processing and I/O excluded. The engine comes from mmdeploy's
``onnx2tensorrt`` with the deploy config's ``backend_config`` (fp16_mode, workspace, shapes); the
ONNX graph uses only standard ops (GridSample is native in TensorRT >= 8.5), so no mmdeploy
plugin is needed.

An engine is checked, not only timed: :func:`tensorrt_parity` runs it and the PyTorch model on the
same inputs and matches their detections one to one (:func:`match_detections`, which needs no
TensorRT and also checks the ONNX Runtime export).
"""
import os.path as osp
from typing import Dict, Iterable, Optional, Union

import mmengine
import numpy as np

from mmeff.benchmark.timing import time_fn

MIN_TENSORRT = '8.5'  # first release with a native GridSample layer
# FP16 engine vs FP32 PyTorch, RT-DETR at 640x640. Not measured (no GPU where this was written):
# FP16's resolution of a normalized coordinate is ~5e-4 (0.3 px at 640) and of a score near 0.8
# ~5e-4; these bounds leave room for its accumulation through the network. Calibrate on a GPU.
FP16_BOX_TOLERANCE = 2.0  # px
FP16_SCORE_TOLERANCE = 1e-2


def require_tensorrt() -> None:
    """Raise with the reason when this machine cannot build or run TensorRT engines."""
    import torch
    try:
        import tensorrt
    except ImportError as error:
        raise RuntimeError('TensorRT is not installed: the tensorrt path needs an NVIDIA GPU and '
                           f'pip install tensorrt (>= {MIN_TENSORRT}).') from error
    from mmengine.utils import digit_version
    if digit_version(tensorrt.__version__) < digit_version(MIN_TENSORRT):
        raise RuntimeError(f'TensorRT {tensorrt.__version__} has no GridSample layer: install '
                           f'tensorrt >= {MIN_TENSORRT}.')
    if not torch.cuda.is_available():
        raise RuntimeError('TensorRT needs a CUDA GPU; torch sees none on this machine.')


def build_engine(onnx_file: str, deploy_cfg: mmengine.Config, engine_file: str,
                 device: str = 'cuda:0') -> str:
    """Build a TensorRT engine of ``onnx_file`` with ``deploy_cfg.backend_config`` (e.g.
    configs/deploy/detection_tensorrt-fp16_static-640x640.py: FP16, 1x3x640x640).

    Returns:
        str: ``engine_file``.
    """
    require_tensorrt()
    from mmdeploy.backend.tensorrt.onnx2tensorrt import onnx2tensorrt
    work_dir, save_file = osp.split(osp.abspath(engine_file))
    mmengine.mkdir_or_exist(work_dir)
    onnx2tensorrt(work_dir, save_file, 0, deploy_cfg, onnx_file, device=device)
    return engine_file


def tensorrt_latency(engine_file: str,
                     inputs: Optional[Iterable[np.ndarray]] = None,
                     input_shape=(1, 3, 640, 640),
                     warmup: int = 20,
                     repeats: int = 200,
                     device: str = 'cuda:0') -> Dict[str, float]:
    """Seconds per engine execution, with the input already on the GPU (I/O excluded).

    Args:
        inputs (Iterable[np.ndarray], optional): Pre-processed images (1, 3, 640, 640) float32,
            e.g. COCO val2017 through the model's test pipeline and data preprocessor: the
            paper's protocol averages over them (``repeats`` runs each). A random input of
            ``input_shape`` when None.

    Returns:
        dict: :func:`mmeff.benchmark.timing.time_fn`'s keys; with ``inputs``, the mean over
        images of each key and ``num_images``.
    """
    require_tensorrt()
    import torch
    from mmdeploy.backend.tensorrt import TRTWrapper
    engine = TRTWrapper(engine_file, device_id=torch.device(device).index or 0)
    if inputs is None:
        inputs = [np.random.default_rng(0).random(input_shape, dtype=np.float32)]
    per_image = []
    for image in inputs:
        feed = dict(input=torch.from_numpy(np.ascontiguousarray(image)).to(device))
        per_image.append(time_fn(lambda: engine(feed), warmup, repeats, device=device))
    stats = {key: float(np.mean([t[key] for t in per_image])) for key in per_image[0]}
    return dict(stats, num_images=len(per_image))


def match_detections(dets: np.ndarray, labels: np.ndarray, ref_dets: np.ndarray,
                     ref_labels: np.ndarray, box_tol: float, score_tol: float,
                     allow_top_k_swaps: bool = False) -> Dict[str, Union[float, int, bool]]:
    """Match two backends' detections of the same images one to one and measure their differences.

    Any backend: ONNX Runtime or TensorRT against PyTorch (:func:`mmeff.deploy.compare.
    pytorch_outputs`). Rows are matched, not compared in order, because scores that differ by a
    rounding error may reorder the top-K. Per image, a pair *agrees* when both rows have the same
    label, their boxes are within ``box_tol`` (max abs coordinate difference) and their scores
    within ``score_tol``; the pairing maximizes the number of agreeing pairs (then minimizes their
    differences) with each row used once (``scipy.optimize.linear_sum_assignment``), so an output
    that repeats one detection agrees on one row only.

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


def tensorrt_outputs(engine_file: str, inputs: np.ndarray,
                     device: str = 'cuda:0') -> Dict[str, np.ndarray]:
    """The engine's outputs for ``inputs`` (N, 3, H, W) float32, one image at a time (the deploy
    configs' engines are static at batch 1), concatenated along the batch axis, on the CPU."""
    require_tensorrt()
    import torch
    from mmdeploy.backend.tensorrt import TRTWrapper
    engine = TRTWrapper(engine_file, device_id=torch.device(device).index or 0)
    per_image = []
    with torch.no_grad():
        for image in np.asarray(inputs, dtype=np.float32):
            feed = dict(input=torch.from_numpy(np.ascontiguousarray(image[None])).to(device))
            per_image.append({name: out.cpu().numpy() for name, out in engine(feed).items()})
    return {name: np.concatenate([out[name] for out in per_image]) for name in per_image[0]}


def tensorrt_parity(model, deploy_cfg: mmengine.Config, engine_file: str, inputs: np.ndarray,
                    box_tol: float = FP16_BOX_TOLERANCE, score_tol: float = FP16_SCORE_TOLERANCE,
                    device: str = 'cuda:0') -> Dict[str, Union[float, int, bool]]:
    """The engine of ``model`` (the PyTorch model it was exported from, :func:`~mmeff.deploy.
    build_deploy_model`) against the model itself on the same ``inputs`` (N, 3, H, W): detections
    matched one to one, swaps at the top-K cut allowed (FP16). See :func:`match_detections`."""
    if deploy_cfg.codebase_config.type != 'mmdet':
        raise ValueError(f'codebase_config.type={deploy_cfg.codebase_config.type!r}: '
                         'tensorrt_parity compares detectors (mmdet) only.')
    import torch
    from .compare import pytorch_outputs
    engine_out = tensorrt_outputs(engine_file, inputs, device)
    torch_out = pytorch_outputs(model, torch.from_numpy(np.asarray(inputs, dtype=np.float32)), deploy_cfg)
    return match_detections(engine_out['dets'], engine_out['labels'], torch_out['dets'],
                            torch_out['labels'], box_tol, score_tol, allow_top_k_swaps=True)
