"""The model tables of the config directories' READMEs: parameters and GMACs of a classifier per
row, kept by ``tools/analysis/model_table.py`` and summarized per architecture for the top-level
README by ``tools/analysis/readme_model_summary.py``.

A row is ``| [name](path) | taxonomy class | params (M) | GMACs (224) | params |``, its path relative
to the config directory. MACs follow :func:`mmeff.benchmark.flops.count_ops` (one multiply-add = 1
MAC); token-reducing models are counted for the random input given.
"""
import re
from typing import Dict, List, Optional, Tuple

from mmengine.registry import DefaultScope

from .flops import count_ops
from .runner import count_params
from .subject import Subject, scope_of

# A row's link and taxonomy class (the columns a person chooses), and a fully measured row.
ROW = re.compile(r'^\| \[(?P<name>[^\]]+)\]\((?P<path>[^)]+)\) \| (?P<taxonomy>[^|]+?) \|')
MEASURED_ROW = re.compile(ROW.pattern + r' (?P<params_m>[\d.]+) \| (?P<gmacs>[\d.]+) \| [\d,]+ \|$')
HEADER = '| config | taxonomy class | params (M) | GMACs ({size}) | params |'
SEPARATOR = '|---|---|---|---|---|'


def measure(config_path: str, img_size: int) -> Dict[str, int]:
    """Trainable parameters and MACs of one image of ``img_size`` x ``img_size`` (random weights,
    eval mode)."""
    subject = Subject(config_path, (img_size, ))
    with DefaultScope.overwrite_default_scope(scope_of(subject.cfg)):
        macs = count_ops(subject.infer_fn(1), subject.model)['macs']
    return dict(params=count_params(subject.model)['trainable'], macs=macs)


def format_row(name: str, path: str, taxonomy: str, params: int, macs: int) -> str:
    return f'| [{name}]({path}) | {taxonomy} | {params / 1e6:.2f} | {macs / 1e9:.2f} | {params:,} |'


def update_readme(readme: str, results: Dict[str, Dict[str, float]], img_size: int) -> Tuple[str, List[str]]:
    """The README text with the measured rows rewritten and a five-column header; and the measured
    configs that have no row."""
    lines, listed = [], set()
    for line in readme.splitlines():
        stripped = line.strip()
        match = ROW.match(stripped)
        if match and match['path'] in results:
            listed.add(match['path'])
            r = results[match['path']]
            line = format_row(match['name'], match['path'], match['taxonomy'], r['params'], r['macs'])
        elif stripped.startswith('| config | taxonomy class |'):
            line = HEADER.format(size=img_size)
        elif re.fullmatch(r'\|(\s*:?-+:?\s*\|)+', stripped) and lines and lines[-1] == HEADER.format(size=img_size):
            line = SEPARATOR
        lines.append(line)
    text = '\n'.join(lines) + ('\n' if readme.endswith('\n') else '')
    return text, sorted(set(results) - listed)


def taxonomy_of(readme: Optional[str], path: str) -> str:
    """The taxonomy class of ``path``'s row; '?' where it has none."""
    for line in (readme or '').splitlines():
        match = ROW.match(line.strip())
        if match and match['path'] == path:
            return match['taxonomy']
    return '?'


def variant_label(name: str, arch: str) -> str:
    """'swin_tiny_p4_w7_in1k-224' -> 'tiny_p4_w7'; names that do not start with '<arch>_' stay whole
    ('resnet18', 'wide_resnet50_2')."""
    name = name.replace('_in1k-224', '').replace('_p16', '')
    return name[len(arch) + 1:] if name.startswith(arch + '_') else name
