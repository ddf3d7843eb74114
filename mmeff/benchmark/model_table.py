"""The model tables of the config directories' READMEs: parameters and GMACs of a classifier per
row, kept by ``tools/analysis/model_table.py`` and summarized per architecture for the top-level
README by ``tools/analysis/readme_model_summary.py``.

A row is ``| [name](path) | taxonomy class | params (M) | GMACs (224) | params |``, its path relative
to the config directory. MACs follow :func:`mmeff.benchmark.flops.count_ops` (one multiply-add = 1
MAC); token-reducing models are counted for the random input given.

The paper table (between :data:`PAPER_BEGIN` and :data:`PAPER_END`) sets every model of the
efficient-ViT paper in the directory beside the authors' numbers (:mod:`mmeff.benchmark.wttf`):
params, MACs against their torchprofile count, and FLOPs in their convention
(:func:`~mmeff.benchmark.flops.count_wttf_flops`) against their fvcore count.
"""
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

from mmengine.registry import DefaultScope

from .flops import count_ops, count_wttf_flops
from .runner import count_params
from .subject import Subject, scope_of
from .wttf import load_paper_table

# A row's link and taxonomy class (the columns a person chooses), and a fully measured row.
ROW = re.compile(r'^\| \[(?P<name>[^\]]+)\]\((?P<path>[^)]+)\) \| (?P<taxonomy>[^|]+?) \|')
MEASURED_ROW = re.compile(ROW.pattern + r' (?P<params_m>[\d.]+) \| (?P<gmacs>[\d.]+) \| [\d,]+ \|$')
HEADER = '| config | taxonomy class | params (M) | GMACs ({size}) | params |'
SEPARATOR = '|---|---|---|---|---|'


PAPER_BEGIN = '<!-- paper table: tools/analysis/model_table.py --paper --update -->'
PAPER_END = '<!-- end of paper table -->'
PAPER_HEADER = ('| paper model | config | params (M) | paper | diff | GMACs | paper (torchprofile) | diff '
                '| GFLOPs (wttf) | paper (fvcore + weights) | diff |')
PAPER_SEPARATOR = '|---|---|---|---|---|---|---|---|---|---|---|'


def measure(config_path: str, img_size: int, wttf: bool = False) -> Dict[str, int]:
    """Trainable parameters and MACs of one image of ``img_size`` x ``img_size`` (random weights,
    eval mode); with ``wttf`` also the FLOPs as the efficient-ViT paper counts them."""
    subject = Subject(config_path, (img_size, ))
    with DefaultScope.overwrite_default_scope(scope_of(subject.cfg)):
        result = dict(params=count_params(subject.model)['trainable'],
                      macs=count_ops(subject.infer_fn(1), subject.model)['macs'])
        if wttf:
            result['wttf_flops'] = count_wttf_flops(subject.model, subject.inputs(1))['wttf_flops']
    return result


def paper_models_in(config_dir: str) -> List[Dict[str, object]]:
    """The paper's models whose mmeff config lies in ``config_dir`` (e.g. configs/vit), each with
    ``path``: its config relative to the directory."""
    prefix = config_dir.rstrip('/').split('configs/')[-1] + '/'
    models = []
    for row in load_paper_table():
        below_configs = row['config'].split('configs/', 1)[1]
        if below_configs.startswith(prefix):
            models.append(dict(row, path=below_configs[len(prefix):]))
    return models


def _diff(ours: float, theirs: float) -> str:
    return f'{100 * (ours - theirs) / theirs:+.1f} %'


def format_paper_row(model: Dict[str, object], measured: Dict[str, int]) -> str:
    params, gmacs, gflops = measured['params'] / 1e6, measured['macs'] / 1e9, measured['wttf_flops'] / 1e9
    name = osp.splitext(osp.basename(model['path']))[0]
    return (f"| {model['model_name']} | [{name}]({model['path']}) "
            f"| {params:.2f} | {model['params_M']:.2f} | {_diff(params, model['params_M'])} "
            f"| {gmacs:.3f} | {model['GMACs_torchprofile']:.3f} | {_diff(gmacs, model['GMACs_torchprofile'])} "
            f"| {gflops:.3f} | {model['GFLOPs_fvcore_custom']:.3f} | {_diff(gflops, model['GFLOPs_fvcore_custom'])} |")


def update_paper_table(readme: str, rows: List[str]) -> str:
    """The README with the paper table between its markers replaced (appended when absent)."""
    table = '\n'.join([PAPER_BEGIN, PAPER_HEADER, PAPER_SEPARATOR] + rows + [PAPER_END])
    if PAPER_BEGIN in readme and PAPER_END in readme:
        start, end = readme.index(PAPER_BEGIN), readme.index(PAPER_END) + len(PAPER_END)
        return readme[:start] + table + readme[end:]
    return readme.rstrip('\n') + '\n\n' + table + '\n'


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
