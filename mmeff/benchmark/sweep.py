"""One run per value of config keys: ``model.test_cfg.eval_idx=0,1,2`` (RT-DETR's decoder depth at
inference), ``model.backbone.arch=tiny,small``; several sweeps give their product."""
import itertools
from ast import literal_eval
from typing import Dict, List, Sequence, Tuple

from .subject import config_name


def _value(text: str):
    """A Python literal where the text is one (``2``, ``0.5``, ``None``), else the string."""
    try:
        return literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sweep(spec: str) -> Tuple[str, List]:
    key, sep, values = spec.partition('=')
    if not sep or not key or not values:
        raise ValueError(f'a sweep is KEY=V1,V2,... (e.g. model.test_cfg.eval_idx=0,1,2), got {spec!r}')
    return key, [_value(v) for v in values.split(',')]


def expand_sweep(config: str, specs: Sequence[str]) -> List[Tuple[str, Dict]]:
    """``(run name, cfg_options)`` for every combination of the sweeps' values."""
    sweeps = [parse_sweep(spec) for spec in specs]
    keys = [key for key, _ in sweeps]
    runs = []
    for values in itertools.product(*(values for _, values in sweeps)):
        options = dict(zip(keys, values))
        suffix = ','.join(f'{key.rsplit(".", 1)[-1]}={value}' for key, value in options.items())
        runs.append((config_name(config) + (f'@{suffix}' if suffix else ''), options))
    return runs
