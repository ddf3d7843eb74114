"""Peak memory of inference and of a training step, each in a fresh process.

A fresh process per (model, mode) keeps one measurement's allocations and allocator caches out of
the next. What is reported, in MiB:

- CUDA: ``torch.cuda.max_memory_allocated`` over one call, after a warm-up call and a reset of the
  peak: weights, inputs, activations, gradients and optimizer state as the caching allocator
  serves them.
- CPU: the growth of the peak resident set size over the process's size before the model was
  built: the same contents, plus allocator overheads. The kernel's peak (``VmHWM``) is reset after
  the warm-up call by writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0); where that is not
  possible the peak covers the warm-up call too (``peak_reset`` is False in the result).

Run as ``python -m mmeff.benchmark.memory CONFIG --mode infer|train ...``; prints one JSON line.
"""
import argparse
import json
import os
import subprocess
import sys
from typing import Dict, Optional, Sequence

MIB = 2**20


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise OSError(f'{field} is not in /proc/self/status')


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure_in_this_process(config: str, mode: str, img_size: Sequence[int], batch_size: int, device: str,
                            cfg_options: Optional[dict] = None) -> Dict[str, object]:
    """Peak memory of one call of the inference forward or the training step (see module doc)."""
    import mmdet.models  # noqa: F401  (libraries loaded before the baseline are not the model's memory)
    import mmpretrain.models  # noqa: F401
    import torch

    from .subject import Subject
    on_cuda = device.startswith('cuda')
    baseline_kib = 0 if on_cuda else _status_kib('VmRSS')
    subject = Subject(config, img_size, device, cfg_options)
    step = subject.train_step_fn(batch_size) if mode == 'train' else subject.infer_fn(batch_size)
    step()  # warm-up: lazy initializations and the optimizer state are part of steady state
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return dict(peak_mib=torch.cuda.max_memory_allocated(device) / MIB, method='max_memory_allocated',
                    batch_size=batch_size)
    reset = _reset_peak_rss()
    step()
    return dict(peak_mib=(_status_kib('VmHWM') - baseline_kib) / 1024, method='peak RSS growth',
                peak_reset=reset, batch_size=batch_size)


def measure_in_subprocess(config: str, mode: str, img_size: Sequence[int], batch_size: int, device: str,
                          cfg_options: Optional[dict] = None, timeout: float = 1800) -> Dict[str, object]:
    """Run :func:`measure_in_this_process` in a fresh interpreter and return its result."""
    cmd = [sys.executable, '-m', 'mmeff.benchmark.memory', config, '--mode', mode, '--batch-size',
           str(batch_size), '--device', device, '--img-size', *map(str, img_size)]
    if cfg_options:
        cmd += ['--cfg-options', json.dumps(cfg_options)]
    import torch
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # the parent's thread count
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f'exit code {proc.returncode}']
        if proc.returncode < 0:  # killed by a signal: the kernel's OOM killer sends SIGKILL
            last = [f'killed by signal {-proc.returncode} (out of memory?)']
        raise RuntimeError(f'{mode} memory measurement failed: {last[0]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description='Peak memory of one model (run in a fresh process)')
    parser.add_argument('config')
    parser.add_argument('--mode', choices=['infer', 'train'], required=True)
    parser.add_argument('--img-size', type=int, nargs='+', default=[224])
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', type=json.loads, default=None, help='a JSON dict')
    args = parser.parse_args()
    result = measure_in_this_process(args.config, args.mode, args.img_size, args.batch_size, args.device,
                                     args.cfg_options)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
