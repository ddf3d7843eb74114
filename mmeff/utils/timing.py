"""Wall-clock timing of a callable, and the environment every timing is recorded with.

A timing is ``warmup`` untimed calls, then ``repeats`` timed calls, each bracketed by a device
synchronization (CUDA kernels are asynchronous); it reports the median and the inter-quartile
range, robust to the outliers that other processes cause.
"""
import os.path as osp
import platform
import time
import traceback
from typing import Callable, Dict, List, Mapping

import numpy as np
import torch


def synchronize(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], warmup: int, repeats: int, device: str = 'cpu') -> Dict[str, float]:
    """Seconds per call of ``fn``: ``median``, ``q1``, ``q3``, ``iqr``, ``min``, ``mean``."""
    timing = time_interleaved(dict(fn=fn), warmup, repeats, device)['fn']
    del timing['times']
    return timing


def time_interleaved(fns: Mapping[str, Callable[[], object]], warmup: int, repeats: int,
                     device: str = 'cpu') -> Dict[str, Dict[str, object]]:
    """:func:`time_fn` of several callables at once, their calls interleaved (the order reversed
    every repeat), so that a change of machine load during the run slows all of them alike.

    Returns:
        dict: per name, ``time_fn``'s keys plus ``times``, the seconds of every timed call (the
        i-th calls of two callables ran next to each other: compare them pairwise).
    """
    if repeats < 1:
        raise ValueError(f'repeats must be at least 1, got {repeats}')
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    results = {}
    for name, seconds in times.items():
        q1, median, q3 = np.percentile(seconds, [25, 50, 75])
        results[name] = dict(median=float(median), q1=float(q1), q3=float(q3), iqr=float(q3 - q1),
                             min=min(seconds), mean=float(np.mean(seconds)), warmup=warmup, repeats=repeats,
                             times=seconds)
    return results


def is_out_of_memory(error: BaseException) -> bool:
    # torch's CPU allocator raises a RuntimeError saying 'DefaultCPUAllocator: not enough memory'
    return (isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or 'out of memory' in str(error)
            or 'not enough memory' in str(error))


def describe_error(error: BaseException) -> str:
    """One line: the error, and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f' (at {osp.basename(frames[-1].filename)}:{frames[-1].lineno})' if frames else ''
    kind = 'out of memory: ' if is_out_of_memory(error) else ''
    message = str(error).strip().splitlines()[0] if str(error).strip() else ''
    return f'{kind}{type(error).__name__}: {message}{where}'


def cpu_name() -> str:
    """The CPU model as the kernel reports it (``lscpu``'s "Model name")."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which fast paths exist (oneDNN's bf16 / int8 kernels, OpenVINO's).
SPEED_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16',
               'amx_int8')


def cpu_flags() -> List[str]:
    """Which of :data:`SPEED_FLAGS` this CPU has (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    present = set(line.split(':', 1)[1].split())
                    return [flag for flag in SPEED_FLAGS if flag in present]
    except OSError:
        pass
    return []


def environment(device: str) -> Dict[str, object]:
    """Where a measurement was made: device and its name, the CPU's speed-relevant flags, threads,
    library versions."""
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    on_cuda = str(device).startswith('cuda')
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if on_cuda else cpu_name(),
        cpu_name=cpu_name(),
        cpu_flags=cpu_flags(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda if on_cuda else None,
        cudnn=torch.backends.cudnn.version() if on_cuda else None,
        python=platform.python_version(),
        mmengine=mmengine.__version__,
        mmcv=mmcv.__version__,
        mmdet=mmdet.__version__,
        mmpretrain=mmpretrain.__version__,
    )
