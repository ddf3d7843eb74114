"""Every inference path of one model side by side: PyTorch eager at each precision and each exported
backend at each precision, timed interleaved on the same input in one process.

A path is ``(backend, precision)``: ``pytorch`` runs ``predict`` of the deploy-built model (RepVGG fused,
the same post-processing the exported graphs contain) under :func:`mmeff.utils.precision.autocast`;
``onnxruntime`` (fp32), ``openvino`` (fp32, bf16, int8) and ``tensorrt`` (fp16, GPU) run the model
exported with the matching deploy config of ``configs/deploy/`` (:func:`deploy_config_for`). A path the
machine cannot run (no bf16 kernels, no GPU, a backend without that precision) is reported as skipped
with the reason, never timed as something else.

Reported per path: latency (median and IQR over interleaved calls), images/s, the ratio to PyTorch
fp32 eager (the first path, always measured), achieved GFLOP/s (the PyTorch model's FLOPs over the
latency: the work the paper counts, whatever a backend fuses), its fraction of this machine's
measured peak for that precision (``--peaks``: the JSON of ``tools/analysis/cpu_peak_throughput.py``),
and the accuracy when an evaluation is asked for (COCO mAP / top-1 through :mod:`mmeff.deploy.evaluate`).
"""
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmeff.utils.precision import PrecisionUnsupported, autocast, check_precision
from mmeff.utils.timing import describe_error, time_interleaved

from .deployed import deploy_config_for
from .flops import count_ops
from .subject import scope_of

Path = Tuple[str, str]  # (backend, precision)
BASELINE: Path = ('pytorch', 'fp32')
TASKS = dict(mmdet='det', mmpretrain='cls')


def expand_paths(backends: Sequence[str], precisions: Sequence[str]) -> List[Path]:
    """Every (backend, precision) asked for, PyTorch fp32 first (the reference of every ratio)."""
    paths = [BASELINE]
    for backend in backends:
        for precision in precisions:
            if (backend, precision) != BASELINE:
                paths.append((backend, precision))
    return paths


def peak_of(peaks: Optional[Dict], precision: str) -> Optional[float]:
    """The highest GFLOP/s this machine reached at ``precision`` (any op, any runtime) in the JSON of
    ``tools/analysis/cpu_peak_throughput.py``, or None when it has none."""
    if not peaks:
        return None
    values = [op['gflops'] for op in peaks.get('precisions', {}).get(precision, {}).values()
              if isinstance(op, dict) and 'gflops' in op]
    return max(values) if values else None


class InferencePaths:
    """One model config and the callables of its inference paths, on the same input.

    Args:
        config: the model config (loaded, overrides applied).
        img_size: (H, W) of the input; the deploy configs' input size is set to it.
        work_dir: where the exported files go (one sub-folder per path).
        checkpoint: weights for every path (random weights without it; an INT8 calibration and an
            accuracy need trained weights to mean something).
        device: 'cpu' or 'cuda[:N]'.
        batch_size: images per timed call (static graphs are exported for it).
        calibration: INT8 paths: overrides of the deploy config's ``backend_config.calibration``
            (``dataset``: a config file whose test_dataloader.dataset is used, ``num_images``).
    """

    def __init__(self, config: Config, img_size: Tuple[int, int], work_dir: str, checkpoint: Optional[str] = None,
                 device: str = 'cpu', batch_size: int = 1, calibration: Optional[Dict] = None):
        self.batch_size, self.calibration = batch_size, calibration or {}
        from mmeff.deploy.deployed import DeployedModel
        self.cfg, self.img_size, self.work_dir, self.checkpoint, self.device = (config, img_size, work_dir,
                                                                                checkpoint, device)
        self.task = TASKS[scope_of(config)]
        # the PyTorch side is the deploy-built model of the ONNX Runtime config: fused as every export is
        self.reference = DeployedModel(self._deploy_cfg('onnxruntime', 'fp32'), config, 'onnxruntime',
                                       osp.join(work_dir, 'pytorch'), checkpoint=checkpoint, device=device)
        self._deployed = {}

    def _deploy_cfg(self, backend: str, precision: str) -> Config:
        from mmdeploy.utils import load_config
        deploy_cfg = load_config(deploy_config_for(self.task, backend, precision))[0]
        deploy_cfg.onnx_config.input_shape = [self.img_size[1], self.img_size[0]]
        if precision == 'int8' and self.calibration:
            deploy_cfg.backend_config.calibration.update(self.calibration)
        return deploy_cfg

    def inputs(self) -> torch.Tensor:
        return self.reference.inputs(self.batch_size)

    def flops(self) -> float:
        """FLOPs of one call (:attr:`batch_size` images) in PyTorch (2 per multiply-add)."""
        from mmeff.deploy.compare import pytorch_outputs
        inputs = self.inputs().to(self.device)
        model, deploy_cfg = self.reference.model, self.reference.deploy_cfg
        return count_ops(lambda: pytorch_outputs(model, inputs, deploy_cfg), model)['flops']

    def forward(self, path: Path) -> Callable[[], object]:
        """The call that runs ``path`` on :meth:`inputs` (exported on first use); raises
        :class:`PrecisionUnsupported` / ``ValueError`` / ``RuntimeError`` with the reason it cannot run."""
        backend, precision = path
        if backend == 'pytorch':
            from mmeff.deploy.compare import pytorch_outputs
            if precision == 'int8':
                raise ValueError('PyTorch eager has no int8 path here: OpenVINO runs int8 (--backend openvino)')
            check_precision(precision, self.device)
            model, deploy_cfg = self.reference.model, self.reference.deploy_cfg
            inputs = self.inputs().to(self.device)

            def run():
                with torch.no_grad(), autocast(precision, self.device):
                    return pytorch_outputs(model, inputs, deploy_cfg)
            return run
        from mmeff.deploy.deployed import DeployedModel
        if path not in self._deployed:
            self._deployed[path] = DeployedModel(
                self._deploy_cfg(backend, precision), self.cfg, backend,
                osp.join(self.work_dir, f'{backend}-{precision}'), checkpoint=self.checkpoint, device=self.device)
        return self._deployed[path].session(self.batch_size).bind(self.inputs().numpy())

    def deploy_cfg(self, path: Path) -> Optional[Config]:
        return None if path[0] == 'pytorch' else self._deployed[path].deploy_cfg

    def deploy_file(self, path: Path) -> Optional[str]:
        return None if path[0] == 'pytorch' else self._deployed[path].exported(self.batch_size)


def compare_paths(config: Config, paths: Sequence[Path], img_size: Tuple[int, int], work_dir: str,
                  warmup: int = 3, repeats: int = 20, checkpoint: Optional[str] = None, device: str = 'cpu',
                  peaks: Optional[Dict] = None, batch_size: int = 1, calibration: Optional[Dict] = None,
                  evaluate: Optional[Callable[[Path, 'InferencePaths'], Dict[str, float]]] = None) -> Dict:
    """Time every runnable path of ``paths`` interleaved (:func:`~mmeff.utils.timing.time_interleaved`),
    and evaluate each with ``evaluate(path, inference_paths)`` when given.

    Returns ``dict(flops=..., paths=[row, ...])``: a row per path in the order given, with ``backend``,
    ``precision`` and either ``skipped`` (the reason) or ``latency`` (the timing of a call of
    ``batch_size`` images), ``fps`` (images/s),
    ``vs_pytorch_fp32``, ``gflops_per_s``, ``fraction_of_peak`` (when ``peaks`` has that precision)
    and the metrics of ``evaluate``.
    """
    logger = MMLogger.get_current_instance()
    subject = InferencePaths(config, img_size, work_dir, checkpoint, device, batch_size, calibration)
    flops = subject.flops()
    rows, forwards = [], {}
    for path in paths:
        row = dict(backend=path[0], precision=path[1])
        try:
            logger.info(f'{path[0]} {path[1]}: preparing')
            forwards[path] = subject.forward(path)
        except (PrecisionUnsupported, ValueError, RuntimeError, ImportError) as error:
            row['skipped'] = describe_error(error)
            logger.warning(f'{path[0]} {path[1]} skipped: {row["skipped"]}')
        rows.append(row)
    if BASELINE not in forwards:
        raise RuntimeError('PyTorch fp32, the reference of every ratio, could not run: '
                           + next(r['skipped'] for r in rows if (r['backend'], r['precision']) == BASELINE))
    logger.info(f'timing {len(forwards)} paths interleaved ({warmup} warm-up, {repeats} repeats each)')
    with torch.no_grad():
        timings = time_interleaved({f'{b}/{p}': fn for (b, p), fn in forwards.items()}, warmup, repeats, device)
    reference = timings['pytorch/fp32']['median']
    for row in rows:
        key = f'{row["backend"]}/{row["precision"]}'
        if key not in timings:
            continue
        timing = {k: v for k, v in timings[key].items() if k != 'times'}
        median = timing['median']
        row.update(latency=timing, fps=batch_size / median, vs_pytorch_fp32=median / reference,
                   gflops_per_s=flops / median / 1e9)
        peak = peak_of(peaks, row['precision'])
        if peak:
            row['fraction_of_peak'] = row['gflops_per_s'] / peak
        if evaluate is not None:
            logger.info(f'{key}: evaluating')
            try:
                row.update(evaluate((row['backend'], row['precision']), subject))
            except Exception as error:  # the timing stands; the accuracy is reported missing with its reason
                row['evaluation_error'] = describe_error(error)
    return dict(flops=flops, task=subject.task, batch_size=batch_size, paths=rows)


HEADLINE_METRICS = ('coco/bbox_mAP', 'accuracy/top1')


def evaluate_path(path: Path, subject: InferencePaths) -> Dict[str, object]:
    """The test evaluator's metrics of ``path`` on the config's test set (:func:`mmeff.deploy.evaluate`),
    with the exported file the timing used, and ``accuracy``: COCO mAP or top-1."""
    from mmeff.deploy.evaluate import evaluate
    backend, precision = path
    # inside the run's work dir, which outlives every evaluation: mmengine's visualizer is a process-wide
    # instance that keeps writing to the first runner's directory
    work_dir = osp.join(subject.work_dir, 'evaluate', f'{backend}-{precision}')
    if backend == 'pytorch':
        metrics = evaluate(subject.cfg, subject.checkpoint, precision=precision, work_dir=work_dir,
                           device=subject.device)
    else:
        metrics = evaluate(subject.cfg, subject.checkpoint, backend, deploy_cfg=subject.deploy_cfg(path),
                           deploy_file=subject.deploy_file(path), work_dir=work_dir, device=subject.device)
    headline = next((metrics[k] for k in HEADLINE_METRICS if k in metrics), None)
    return dict(metrics=metrics, accuracy=headline)


PATH_COLUMNS = ('name', 'backend', 'precision', 'latency_ms', 'latency_iqr_ms', 'fps', 'vs_pytorch_fp32',
                'gflops_per_s', 'fraction_of_peak', 'accuracy', 'skipped')


def path_rows(results: Sequence[Dict]) -> List[Dict[str, object]]:
    """One flat row per (model, path) of :func:`compare_paths` results (each with its ``name``);
    ``accuracy`` is the evaluation's headline metric (COCO mAP or top-1) when there is one."""
    rows = []
    for result in results:
        for path in result['paths']:
            row = dict(name=result['name'], backend=path['backend'], precision=path['precision'])
            if 'latency' in path:
                row.update(latency_ms=path['latency']['median'] * 1e3, latency_iqr_ms=path['latency']['iqr'] * 1e3,
                           fps=path['fps'], vs_pytorch_fp32=path['vs_pytorch_fp32'], gflops_per_s=path['gflops_per_s'])
                if 'fraction_of_peak' in path:
                    row['fraction_of_peak'] = path['fraction_of_peak']
            if 'accuracy' in path:
                row['accuracy'] = path['accuracy']
            if 'skipped' in path:
                row['skipped'] = path['skipped']
            if 'evaluation_error' in path:
                row['accuracy'] = f'not evaluated: {path["evaluation_error"]}'
            rows.append(row)
    return rows


def format_paths(results: Sequence[Dict]) -> str:
    """The side-by-side table: a row per model and path (a model that failed: one row with its error)."""
    from terminaltables import AsciiTable
    rows = path_rows(results) + [dict(name=r['name'], skipped='; '.join(r['errors'].values()))
                                 for r in results if r.get('errors')]
    columns = [c for c in PATH_COLUMNS if any(c in row for row in rows)]

    def cell(value):
        if isinstance(value, float):
            return f'{value:.3g}' if abs(value) < 100 else f'{value:.1f}'
        return '' if value is None else str(value)
    return AsciiTable([list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]).table


def plot_paths(results: Sequence[Dict], out_file: str) -> None:
    """Latency of every path, one panel per model: against the accuracy where there is one (the cost of a
    precision), else as bars with the ratio to PyTorch fp32 written on them."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    results = [r for r in results if r['paths']]
    if not results:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, result in zip(axes[0], results):
        timed = [p for p in result['paths'] if 'latency' in p]
        labels = [f'{p["backend"]}\n{p["precision"]}' for p in timed]
        latencies = [p['latency']['median'] * 1e3 for p in timed]
        if timed and all(isinstance(p.get('accuracy'), float) for p in timed):
            for p, label, latency in zip(timed, labels, latencies):
                ax.scatter(latency, p['accuracy'])
                ax.annotate(label.replace('\n', ' '), (latency, p['accuracy']), textcoords='offset points',
                            xytext=(4, 4), fontsize=8)
            ax.set_xlabel(f'latency (ms, batch {result["batch_size"]})')
            ax.set_ylabel('accuracy')
        else:
            bars = ax.bar(range(len(timed)), latencies)
            for bar, p in zip(bars, timed):
                ax.annotate(f'{p["vs_pytorch_fp32"]:.2f}x', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha='center', va='bottom', fontsize=8)
            ax.set_xticks(range(len(timed)), labels, fontsize=8)
            ax.set_ylabel(f'latency (ms, batch {result["batch_size"]})')
        ax.set_title(result['name'], fontsize=10)
    fig.suptitle(results[0].get('protocol', {}).get('device_name', '') if results else '', fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
