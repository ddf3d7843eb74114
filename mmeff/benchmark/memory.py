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
from typing import Callable, Dict, Optional, Sequence

MIB = 2**20


def status_kib(field: str) -> int:
    """A size field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise OSError(f'{field} is not in /proc/self/status')


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set size (``VmHWM``) to the current one; False where the
    kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_memory(make_step: Callable[[], Callable[[], object]], device: str = 'cpu') -> Dict[str, object]:
    """Peak memory of one call of the step ``make_step()`` returns (see module doc): the baseline
    is taken before ``make_step`` builds the model, the peak after a warm-up call."""
    import torch
    on_cuda = device.startswith('cuda')
    baseline_kib = 0 if on_cuda else status_kib('VmRSS')
    step = make_step()
    step()  # warm-up: lazy initializations and the optimizer state are part of steady state
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return dict(peak_mib=torch.cuda.max_memory_allocated(device) / MIB, method='max_memory_allocated')
    reset = reset_peak_rss()
    step()
    return dict(peak_mib=(status_kib('VmHWM') - baseline_kib) / 1024, method='peak RSS growth', peak_reset=reset)


def measure_in_this_process(config: str, mode: str, img_size: Sequence[int], batch_size: int, device: str,
                            cfg_options: Optional[dict] = None) -> Dict[str, object]:
    """Peak memory of one call of the inference forward or the training step (see module doc)."""
    import mmdet.models  # noqa: F401  (libraries loaded before the baseline are not the model's memory)
    import mmpretrain.models  # noqa: F401

    from .subject import Subject

    def make_step():
        subject = Subject(config, img_size, device, cfg_options)
        return subject.train_step_fn(batch_size) if mode == 'train' else subject.infer_fn(batch_size)

    return dict(peak_memory(make_step, device), batch_size=batch_size)


def json_from_subprocess(cmd: Sequence[str], what: str, timeout: float = 1800) -> Dict[str, object]:
    """The JSON printed on the last stdout line of ``cmd``, run with this process's torch thread
    count; a failure raises ``RuntimeError`` naming ``what`` and the child's last error line."""
    import torch
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # the parent's thread count
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f'exit code {proc.returncode}']
        if proc.returncode < 0:  # killed by a signal: the kernel's OOM killer sends SIGKILL
            last = [f'killed by signal {-proc.returncode} (out of memory?)']
        raise RuntimeError(f'{what} failed: {last[0]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_in_subprocess(config: str, mode: str, img_size: Sequence[int], batch_size: int, device: str,
                          cfg_options: Optional[dict] = None, timeout: float = 1800) -> Dict[str, object]:
    """Run :func:`measure_in_this_process` in a fresh interpreter and return its result."""
    cmd = [sys.executable, '-m', 'mmeff.benchmark.memory', config, '--mode', mode, '--batch-size',
           str(batch_size), '--device', device, '--img-size', *map(str, img_size)]
    if cfg_options:
        cmd += ['--cfg-options', json.dumps(cfg_options)]
    return json_from_subprocess(cmd, f'{mode} memory measurement', timeout)


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
