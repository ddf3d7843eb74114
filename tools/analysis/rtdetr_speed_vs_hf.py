"""mmeff's RT-DETR vs. HF transformers' ``RTDetrForObjectDetection`` on this machine, side by side.

    python tools/analysis/rtdetr_speed_vs_hf.py [--depths 18 50] [--img-size 640] [--warmup 3]
        [--repeats 10] [--train-batch-size 2] [--threads N] [--no-memory]

Same weights (HF's random weights mapped into mmeff, :mod:`mmeff.converters.hf_rtdetr`),
same pre-normalized input, eager PyTorch:

- inference latency, batch 1: mmeff ``predict`` (RepVGG fused with ``switch_to_deploy``, top-K
  post-processing included) vs. HF forward + ``post_process_object_detection`` (its top-K); then
  mmeff again with every BatchNorm also folded into its conv (``fold_batchnorm=True``, what
  mmdet's ``--fuse-conv-bn`` does; HF has no such switch);
- training step, batch ``--train-batch-size``: forward with the same random GT boxes (loss with
  denoising), backward, ``torch.optim.AdamW`` step on the trainable parameters, for both;
- peak memory of each (implementation, mode) in a fresh subprocess: growth of the peak RSS over
  the process's RSS before the model was built (mmeff.benchmark.memory's method).

Times are medians of ``--repeats`` calls after ``--warmup`` calls; ratios are mmeff / HF
(below 1 = mmeff better). Issue targets: inference <= 0.9, training step <= 1, memory <= 1.
"""
import argparse
import json
import sys
from typing import Callable, Dict

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmeff  # noqa: F401  (registers the modules)
from mmeff.benchmark.memory import json_from_subprocess, peak_memory
from mmeff.benchmark.subject import det_data_samples
from mmeff.converters.hf_rtdetr import hf_rtdetr_config, hf_to_mmeff_state_dict
from mmeff.models.layers.reparam import switch_to_deploy
from mmeff.paths import config_path
from mmeff.registry import DET_MODELS
from mmeff.utils.timing import environment, time_fn

IMPLS = ('mmeff', 'hf')


def parse_args():
    parser = argparse.ArgumentParser(description="mmeff vs. HF transformers' RT-DETR on this CPU")
    parser.add_argument('--depths', type=int, nargs='+', default=[50, 18], choices=[18, 34, 50, 101])
    parser.add_argument('--img-size', type=int, default=640)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--train-batch-size', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch)')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory subprocesses')
    parser.add_argument('--child', nargs=2, metavar=('IMPL', 'MODE'), help=argparse.SUPPRESS)
    return parser.parse_args()


def build_mmeff(depth: int):
    init_default_scope('mmdet')
    return DET_MODELS.build(Config.fromfile(config_path(f'rtdetr_r{depth}.py')).model)


def build_hf(depth: int):
    from transformers import RTDetrForObjectDetection
    return RTDetrForObjectDetection(hf_rtdetr_config(depth))


def inference_fn(impl: str, model, size: int, fold_batchnorm: bool = False) -> Callable[[], object]:
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.eval()
    if impl == 'mmeff':
        switch_to_deploy(model, fold_batchnorm)
        samples = det_data_samples(1, (size, size))
        return torch.no_grad()(lambda: model.predict(images, samples, rescale=True))
    from transformers import RTDetrImageProcessor
    processor = RTDetrImageProcessor()

    @torch.no_grad()
    def infer():
        outputs = model(pixel_values=images)
        return processor.post_process_object_detection(outputs, threshold=0.0,
                                                        target_sizes=[(size, size)])

    return infer


def train_step_fn(impl: str, model, size: int, batch_size: int) -> Callable[[], object]:
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    samples = det_data_samples(batch_size, (size, size), num_classes=80)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=1e-4)
    if impl == 'mmeff':
        def loss():
            return model.parse_losses(model.loss(images, samples))[0]
    else:
        # HF's labels: normalized (cx, cy, w, h), the same boxes.
        scale = torch.tensor([size, size, size, size], dtype=torch.float32)
        labels = []
        for sample in samples:
            x1, y1, x2, y2 = (sample.gt_instances.bboxes / scale).unbind(-1)
            boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
            labels.append(dict(class_labels=sample.gt_instances.labels, boxes=boxes))

        def loss():
            return model(pixel_values=images, labels=labels).loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        optimizer.step()
        return value

    return step


def memory_child(impl: str, mode: str, depth: int, args) -> Dict[str, float]:
    """Peak RSS growth of one call (after a warm-up call), in this process."""
    if impl == 'hf':
        import transformers  # noqa: F401  (libraries are not the model's memory)

    def make_step():
        model = build_mmeff(depth) if impl == 'mmeff' else build_hf(depth)
        return (train_step_fn(impl, model, args.img_size, args.train_batch_size) if mode == 'train'
                else inference_fn(impl, model, args.img_size))

    return peak_memory(make_step)


def memory_in_subprocess(impl: str, mode: str, depth: int, args) -> float:
    cmd = [sys.executable, __file__, '--child', impl, mode, '--depths', str(depth),
           '--img-size', str(args.img_size), '--train-batch-size', str(args.train_batch_size)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    return json_from_subprocess(cmd, f'{impl} {mode} memory run')['peak_mib']


def paired_models(depth: int) -> Dict[str, torch.nn.Module]:
    """HF's model with random weights and mmeff's with the same weights."""
    hf = build_hf(depth)
    ours = build_mmeff(depth)
    ours.load_state_dict(hf_to_mmeff_state_dict(hf.state_dict()), strict=True)
    return dict(mmeff=ours, hf=hf)


def measure(depth: int, args) -> Dict[str, Dict[str, float]]:
    """{metric: {impl: value}} for one depth."""
    train_label = f'train step ms (b{args.train_batch_size})'
    folded_label = 'inference ms (b1, BN folded)'
    results = {'inference ms (b1)': {}, folded_label: {}, train_label: {}}
    # Fresh models per mode: inference fuses RepVGG, training uses the unfused blocks.
    models = paired_models(depth)
    for impl in IMPLS:
        timing = time_fn(inference_fn(impl, models[impl], args.img_size), args.warmup, args.repeats)
        results['inference ms (b1)'][impl] = 1000 * timing['median']
    results[folded_label]['hf'] = results['inference ms (b1)']['hf']
    timing = time_fn(inference_fn('mmeff', models['mmeff'], args.img_size, fold_batchnorm=True), args.warmup,
                     args.repeats)
    results[folded_label]['mmeff'] = 1000 * timing['median']
    models = paired_models(depth)
    for impl in IMPLS:
        step = train_step_fn(impl, models[impl], args.img_size, args.train_batch_size)
        timing = time_fn(step, max(1, args.warmup // 2), max(3, args.repeats // 2))
        results[train_label][impl] = 1000 * timing['median']
    del models
    if not args.no_memory:
        for mode, label in (('infer', 'inference peak MiB'),
                            ('train', f'train peak MiB (b{args.train_batch_size})')):
            results[label] = {impl: memory_in_subprocess(impl, mode, depth, args) for impl in IMPLS}
    return results


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(memory_child(*args.child, args.depths[0], args)))
        return
    env = environment('cpu')
    print(f"{env['cpu_name']}, torch {env['torch']}, {env['threads']} threads, "
          f'{args.img_size}x{args.img_size}, median of {args.repeats} after {args.warmup} warm-up '
          f'(training: {max(3, args.repeats // 2)} after {max(1, args.warmup // 2)})')
    print(f"{'model':<10} {'metric':<30} {'mmeff':>10} {'HF':>10} {'mmeff/HF':>9}")
    for depth in args.depths:
        for metric, values in measure(depth, args).items():
            print(f"{'R' + str(depth):<10} {metric:<30} {values['mmeff']:>10.1f} {values['hf']:>10.1f} "
                  f"{values['mmeff'] / values['hf']:>9.2f}", flush=True)


if __name__ == '__main__':
    main()
