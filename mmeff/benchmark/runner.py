"""Benchmark one config: every requested metric, each with the protocol it was measured under.

``benchmark_config`` never raises for a model's own failure: an error (or out-of-memory) of one
metric is recorded under ``errors`` with its reason and the other metrics still run, so that a
sweep over many configs reports every model.
"""
import functools
import os
import tempfile
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmeff.utils.timing import describe_error, environment, is_out_of_memory, time_fn

from .deployed import default_deploy_cfg, deployed_model, require_backend
from .flops import count_ops, count_wttf_flops
from .memory import measure_in_subprocess
from .subject import Subject, config_name

METRICS = ('params', 'flops', 'latency', 'throughput', 'train', 'memory')
BACKENDS = ('pytorch', 'onnxruntime', 'openvino', 'tensorrt')
INFERENCE_ONLY = ('train', 'memory')  # what the exported backends cannot measure
FLOP_CONVENTIONS = ('mmeff', 'wttf')
# --batch-sizes auto: powers of two until the throughput stops rising by this fraction (or memory runs out)
AUTO_BATCH_GAIN = 0.03
AUTO_BATCH_LIMIT = 4096


def check_backend(backend: str) -> None:
    """Raise with the reason when ``backend`` is unknown or cannot run on this machine."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')
    if backend != 'pytorch':
        require_backend(backend)


def count_params(model: torch.nn.Module) -> Dict[str, int]:
    return dict(total=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def measure_flops(subject: Subject, convention: str) -> Dict[str, object]:
    """MACs and FLOPs of one image (:func:`count_ops`); with ``convention='wttf'`` also the
    efficient-ViT paper's FLOP count (:func:`count_wttf_flops`)."""
    result = dict(count_ops(subject.infer_fn(1), subject.model), batch_size=1, convention=convention)
    if convention == 'wttf':
        result.update(count_wttf_flops(subject.model, subject.inputs(1)))
    return result


def measure_latency(subject: Subject, warmup: int, repeats: int, precision: str = 'fp32') -> Dict[str, object]:
    return dict(time_fn(subject.infer_fn(1, precision), warmup, repeats, subject.device), batch_size=1)


def measure_throughput(time_batch: Callable[[int], Dict[str, float]], batch_sizes: Union[str, Sequence[int]],
                       warmup: int, repeats: int) -> Dict[str, object]:
    """Images/s at each batch size (``time_batch(batch_size)`` times one batch), and the best one;
    stops at the first out-of-memory. ``batch_sizes='auto'`` searches as the efficient-ViT paper does
    for the best batch: doubling from 1 until the throughput rises by less than
    :data:`AUTO_BATCH_GAIN` (on a CPU it saturates long before memory runs out) or memory runs out."""
    per_batch_size = {}
    search = batch_sizes == 'auto'
    sizes = [2**i for i in range(AUTO_BATCH_LIMIT.bit_length())] if search else sorted(batch_sizes)
    for batch_size in sizes:
        try:
            timing = time_batch(batch_size)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            per_batch_size[batch_size] = 'out of memory'
            break
        best_so_far = max(per_batch_size.values(), default=0.0)
        per_batch_size[batch_size] = batch_size / timing['median']
        if search and per_batch_size[batch_size] < best_so_far * (1 + AUTO_BATCH_GAIN):
            break
    measured = {bs: ips for bs, ips in per_batch_size.items() if not isinstance(ips, str)}
    if not measured:
        raise MemoryError(f'out of memory at the smallest batch size {min(per_batch_size)}')
    best = max(measured, key=measured.get)
    return dict(images_per_s=measured[best], batch_size=best, per_batch_size=per_batch_size, warmup=warmup,
                repeats=repeats)


def measure_train(subject: Subject, batch_size: int, warmup: int, repeats: int,
                  dataset_size: Optional[int]) -> Dict[str, object]:
    """Time of one training step, and of one epoch over ``dataset_size`` images at that speed."""
    timing = time_fn(subject.train_step_fn(batch_size), warmup, repeats, subject.device)
    subject.model.eval()
    optimizer = subject.cfg.get('optim_wrapper', {}).get('optimizer', {}).get('type', 'AdamW')
    result = dict(timing, batch_size=batch_size, optimizer=optimizer)
    if dataset_size:
        steps = -(-dataset_size // batch_size)  # the last, partial batch is a step too
        result.update(dataset_size=dataset_size, epoch_s=steps * timing['median'])
    return result


def _config_path(config: Union[str, Config], tmp_dir: str) -> str:
    """A file the memory subprocess can read."""
    if isinstance(config, str):
        return config
    path = os.path.join(tmp_dir, config_name(config) + '.py')
    config.dump(path)
    return path


def benchmark_config(config: Union[str, Config],
                     metrics: Sequence[str] = METRICS,
                     img_size: Sequence[int] = (224, ),
                     device: str = 'cpu',
                     backend: str = 'pytorch',
                     batch_sizes: Sequence[int] = (1, 8, 32),
                     train_batch_size: int = 8,
                     dataset_size: Optional[int] = None,
                     warmup: int = 5,
                     repeats: int = 20,
                     cfg_options: Optional[dict] = None,
                     deploy_cfg: Optional[str] = None,
                     flops_convention: str = 'mmeff',
                     eval_precision: str = 'fp32') -> Dict[str, object]:
    """Measure ``metrics`` (a subset of :data:`METRICS`) of the model of ``config``.

    With ``backend`` 'onnxruntime' or 'tensorrt', latency and throughput are of the exported model
    (``deploy_cfg``, default: the task's config in configs/deploy/), each with the PyTorch eager
    time of the same model beside it (:class:`~mmeff.deploy.deployed.DeployedModel`); params
    and FLOPs are the PyTorch model's; training and memory (:data:`INFERENCE_ONLY`) are skipped.
    ``flops_convention='wttf'`` adds the efficient-ViT paper's FLOP count; ``eval_precision='bf16'``
    times PyTorch inference under autocast (the paper's ``eval_amp``).

    Returns a dict with ``name``, ``config``, ``protocol`` (environment, input size, backend, dtype),
    one entry per metric and ``errors`` (metric -> reason).
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f'unknown metrics {sorted(unknown)}; choose from {METRICS}')
    if flops_convention not in FLOP_CONVENTIONS:
        raise ValueError(f'unknown FLOP convention {flops_convention!r}; choose from {FLOP_CONVENTIONS}')
    if eval_precision != 'fp32' and backend != 'pytorch':
        raise ValueError(f'eval_precision={eval_precision!r} autocasts PyTorch; an exported backend ({backend}) runs '
                         'the precision of its deploy config (side by side: --backend ... --precision ...)')
    check_backend(backend)
    logger = MMLogger.get_current_instance()
    img_size = tuple(img_size) * 2 if len(img_size) == 1 else tuple(img_size)
    result = dict(name=config_name(config), config=config if isinstance(config, str) else config.filename,
                  # float32 is what the pytorch backend measures (FP16 comes with TensorRT)
                  protocol=dict(environment(device), backend=backend, img_size=list(img_size),
                                dtype='float32' if eval_precision == 'fp32' else f'float32, inference {eval_precision} '
                                'autocast'),
                  errors={})
    if backend != 'pytorch':
        skipped = [m for m in metrics if m in INFERENCE_ONLY]
        metrics = [m for m in metrics if m not in INFERENCE_ONLY]
        if skipped:
            logger.info(f'--backend {backend} measures inference only: {skipped} skipped (use --backend pytorch)')
    try:
        subject = Subject(config, img_size, device, cfg_options)
    except Exception as error:
        result['errors']['build'] = describe_error(error)
        return result
    result['task'] = subject.task
    measures = dict(
        params=lambda: count_params(subject.model),
        flops=lambda: measure_flops(subject, flops_convention),
        latency=lambda: measure_latency(subject, warmup, repeats, eval_precision),
        throughput=lambda: measure_throughput(
            lambda bs: time_fn(subject.infer_fn(bs, eval_precision), warmup, repeats, subject.device), batch_sizes,
            warmup, repeats),
        train=lambda: measure_train(subject, train_batch_size, warmup, repeats, dataset_size))
    with tempfile.TemporaryDirectory() as export_dir:
        if backend != 'pytorch':
            result['protocol']['deploy_cfg'] = deploy_cfg = deploy_cfg or default_deploy_cfg(subject.task, backend)
            # exported on first use: params and FLOPs alone need no export
            deployed = functools.lru_cache(maxsize=None)(lambda: deployed_model(
                subject.cfg, subject.task, backend, img_size, export_dir, deploy_cfg, device))
            measures.update(
                latency=lambda: deployed().latency(1, warmup, repeats),
                throughput=lambda: measure_throughput(lambda bs: deployed().time_backend(bs, warmup, repeats),
                                                      batch_sizes, warmup, repeats))
        for metric in [m for m in METRICS if m in metrics and m != 'memory']:
            logger.info(f'{result["name"]}: {metric}')
            try:
                result[metric] = measures[metric]()
            except Exception as error:
                result['errors'][metric] = describe_error(error)
    if 'memory' in metrics:
        logger.info(f'{result["name"]}: memory (fresh processes)')
        with tempfile.TemporaryDirectory() as tmp_dir:
            path = _config_path(config, tmp_dir)
            result['memory'] = {}
            for mode, batch_size in (('infer', 1), ('train', train_batch_size)):
                try:
                    result['memory'][mode] = measure_in_subprocess(path, mode, img_size, batch_size, device,
                                                                   cfg_options)
                except Exception as error:
                    result['errors'][f'memory_{mode}'] = describe_error(error)
    return result

