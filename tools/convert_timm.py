"""Convert timm classifier weights into an mmeff checkpoint, checked against the config's model.

    python tools/convert_timm.py TIMM_NAME_OR_FILE DST [--config C] [--timm-model NAME] [--no-verify]
    python tools/convert_timm.py --list

``TIMM_NAME_OR_FILE`` is a timm model name (``swin_tiny_patch4_window7_224``, or with a tag:
``resnet50.tv_in1k``), whose published weights timm downloads (``timm.create_model(name, pretrained=True)``),
or a file of timm weights (``.pth``/``.pt``/``.bin``/``.safetensors``; a bare state dict or one wrapped as
``{'model': ...}`` / ``{'state_dict': ...}``, read by timm's own loader, EMA weights first), whose timm model
is ``--timm-model`` or the twin of ``--config``. The twin table (``mmeff.converters.twins``, ``--list``) gives
the mmeff config (default of ``--config``), the timm ``create_model`` arguments, the converter
(``mmeff.converters.timm``) and the parity tolerance.

The converted state dict is loaded into the config's classifier with ``strict=True``; then (unless
``--no-verify``) both models run on the same random batch at the config's resolution in eval mode, the
max |logit diff| is printed and the tool fails above the twin's tolerance (``twins.RELATIVE_TOLERANCE`` x the
std of timm's logits, the bound ``tests/test_timm_twins.py`` applies), and the backbone is re-initialised
from the written file through the ``init_cfg`` line printed at the end. DST is written only when every check
passed: ``{'state_dict': <ImageClassifier keys: backbone.*, head.*>, 'meta': {...}}``, which mmengine loads
as ``load_from``, as the classifier's ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or as the
backbone's ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')`` (docs/timm_weights.md).
"""
import argparse
import copy
import hashlib
import io
import logging
import os
import os.path as osp
import sys
from contextlib import redirect_stdout
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import mmeff
from mmeff.converters.twins import TIMM_TWINS, TimmTwin, compare_logits, parity_problems
from mmeff.paths import CONFIGS_DIR
from mmeff.registry import CLS_MODELS

CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')
# twins whose timm kwargs give another layout than the weights timm publishes under that name: only files
# of a timm model built with those kwargs convert
UNFIT_PUBLISHED_WEIGHTS = {
    'vit_tiny_patch16_224': "timm's vit_tiny_patch16_224 weights (AugReg) have the class token in the position "
                            'embedding and no LayerScale; the twin is the DeiT III layout, which timm publishes '
                            'for small and base only',
}
BATCH_SIZE = 2  # two images: the check also needs the logits to depend on the input
SEED = 0


class ConversionError(Exception):
    """A reason the conversion cannot go on (printed as ``error: ...``, exit status 1)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='timm weights -> mmeff checkpoint, checked against the config')
    parser.add_argument('source', nargs='?', metavar='TIMM_NAME_OR_FILE',
                        help='timm model name (its published weights are downloaded) or a file of timm weights')
    parser.add_argument('dst', nargs='?', metavar='DST', help='mmeff checkpoint to write')
    parser.add_argument('--config', help="mmeff config (default: the twin table's config of the timm model)")
    parser.add_argument('--timm-model', help='timm model name of a weight file (default: the twin of --config)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the logit parity check and the init_cfg round trip (the strict load stays)')
    parser.add_argument('--list', action='store_true', help='print the twin table (markdown) and exit')
    args = parser.parse_args(argv)
    if not args.list and not (args.source and args.dst):
        parser.error('TIMM_NAME_OR_FILE and DST are required (or --list)')
    return args


# ----------------------------------------------------------------------------------------- the twin table
def output_name(twin: TimmTwin) -> str:
    return f'checkpoints/{osp.splitext(osp.basename(twin.config))[0]}_timm.pth'


def published_weights(timm_name: str) -> List[str]:
    """The tags of timm's published weights for ``timm_name`` (no tag: all of its architecture's), the
    default first; from timm's registry, no network."""
    import timm
    base, _, tag = timm_name.partition('.')
    tags = timm.list_pretrained(base + '.*')
    return [t for t in tags if not tag or t == timm_name]


def default_weights(twin: TimmTwin) -> Optional[str]:
    """What ``timm.create_model(twin.timm_name, pretrained=True)`` downloads; None if none fits the twin."""
    import timm
    if twin.timm_name in UNFIT_PUBLISHED_WEIGHTS or not published_weights(twin.timm_name):
        return None
    return timm.models.get_pretrained_cfg(twin.timm_name).hf_hub_id or twin.timm_name


def table_markdown() -> str:
    """The twin table as ``--list`` prints it (and docs/timm_weights.md shows it)."""
    lines = ['| mmeff config | timm model | timm kwargs | converter | tolerance (max \\|logit diff\\| / logit std) '
             "| timm's default weights | command |",
             '|---|---|---|---|---|---|---|']
    for twin in TIMM_TWINS.values():
        kwargs = ', '.join(f'{k}={v!r}' for k, v in twin.timm_kwargs.items()) or '-'
        weights = default_weights(twin)
        command = (f'{twin.timm_name} {output_name(twin)}' if weights else
                   f'TIMM_WEIGHTS.pth {output_name(twin)} --timm-model {twin.timm_name}')
        lines.append(f'| `configs/{twin.config}` | `{twin.timm_name}` | {kwargs} | `{twin.convert.__name__}` '
                     f'| {twin.tolerance:g} | {weights or "none that fit"} '
                     f'| `python tools/convert_timm.py {command}` |')
    return '\n'.join(lines)


def twins_listing() -> str:
    return '\n'.join(f'  {twin.timm_name:32s} configs/{twin.config}' for twin in TIMM_TWINS.values())


def twin_of_timm_name(timm_name: str) -> Optional[TimmTwin]:
    base = timm_name.partition('.')[0]  # 'resnet50.tv_in1k' -> 'resnet50'
    return next((twin for twin in TIMM_TWINS.values() if twin.timm_name == base), None)


def resolve_config(config: str) -> Tuple[str, Optional[TimmTwin]]:
    """The config file of ``config`` (a path, or relative to configs/) and its twin (None if not in the table)."""
    candidates = (config, osp.join(osp.dirname(CONFIGS_DIR), config), osp.join(CONFIGS_DIR, config))
    path = next((c for c in candidates if osp.isfile(c)), None)  # as given, from the repository, under configs/
    if path is None:
        raise ConversionError(f'no config {config} (neither a file nor under {CONFIGS_DIR})')
    relative = osp.relpath(osp.abspath(path), CONFIGS_DIR).replace(os.sep, '/')
    return path, TIMM_TWINS.get(relative)


def resolve(args) -> Tuple[TimmTwin, str, str, Optional[str]]:
    """(twin, timm model name, config file, weight file or None) of the command line."""
    is_file = osp.isfile(args.source) or args.source.lower().endswith(CHECKPOINT_SUFFIXES)
    if is_file and not osp.isfile(args.source):
        raise ConversionError(f'no such file: {args.source}')
    if not is_file and args.timm_model:
        raise ConversionError('--timm-model is for a weight file; here the source is the timm model name')
    timm_name = args.timm_model if is_file else args.source
    config_file, config_twin = resolve_config(args.config) if args.config else (None, None)
    name_twin = twin_of_timm_name(timm_name) if timm_name else None
    if timm_name and name_twin is None:
        raise ConversionError(f'{timm_name} is not the timm twin of any mmeff config; the twins (timm model, '
                              f'mmeff config; python tools/convert_timm.py --list):\n{twins_listing()}')
    if not timm_name and config_twin is None:
        raise ConversionError(f'which timm model are the weights of {args.source}? {args.config or "no --config"} '
                              'is not in the twin table: pass --timm-model or the --config of a twin:\n'
                              + twins_listing())
    if name_twin and config_twin and name_twin is not config_twin:
        raise ConversionError(f'{timm_name} is the twin of configs/{name_twin.config}, not of {args.config} '
                              f'(whose twin is {config_twin.timm_name})')
    twin = name_twin or config_twin
    # a config outside the table (e.g. a derived one) gets the converter of the timm model's twin
    return twin, timm_name or twin.timm_name, config_file or osp.join(CONFIGS_DIR, twin.config), (
        args.source if is_file else None)


# ------------------------------------------------------------------------------------------- the models
def _first_lines(error: BaseException, limit: int = 2000) -> str:
    text = f'{type(error).__name__}: {error}'
    return text if len(text) <= limit else text[:limit] + ' [...]'


def load_timm_model(twin: TimmTwin, timm_name: str, weights: Optional[str]) -> torch.nn.Module:
    """timm's model of the twin (its create_model kwargs) with the published weights or those of ``weights``,
    through timm's own loader (its checkpoint filter included), strictly; eval mode."""
    import timm
    kwargs = dict(twin.timm_kwargs)
    layout = f' built as the twin ({", ".join(f"{k}={v!r}" for k, v in kwargs.items())})' if kwargs else ''
    if weights:
        # a file of (PyTorch / safetensors) weights, through timm's loader, not a custom one (ViT's: .npz)
        kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay', {}), file=osp.abspath(weights),
                                                custom_load=False)
        try:
            return timm.create_model(timm_name, pretrained=True, **kwargs).eval()
        except Exception as error:  # timm's loader: RuntimeError (keys, shapes, pickle), safetensors errors
            raise ConversionError(f'{weights} does not load into timm\'s {timm_name}{layout} (weights of '
                                  f'another model? pass --timm-model):\n{_first_lines(error)}') from error
    own_file = f'python tools/convert_timm.py FILE DST --timm-model {timm_name}'
    if not published_weights(timm_name):
        raise ConversionError(f'timm publishes no weights for {timm_name}: convert a file of timm weights '
                              f'instead ({own_file})')
    if timm_name.partition('.')[0] in UNFIT_PUBLISHED_WEIGHTS:
        raise ConversionError(f'{UNFIT_PUBLISHED_WEIGHTS[timm_name.partition(".")[0]]}: they do not load into timm\'s '
                              f'{timm_name}{layout}. Convert a file of a timm model built so ({own_file})')
    source = timm.models.get_pretrained_cfg(timm_name).hf_hub_id or timm_name
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs).eval()
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError, requests' / urllib's connection errors
        raise ConversionError(
            f'could not download timm\'s published weights of {timm_name} ({source}); no network to the weight '
            f'hosts (huggingface.co) here?\n  {_first_lines(error)}\nDownload them where there is network (e.g. '
            f'torch.save(timm.create_model({timm_name!r}, pretrained=True).state_dict(), "{timm_name}.pth")) '
            f'and convert the file: python tools/convert_timm.py {timm_name}.pth DST --timm-model '
            f'{timm_name}') from error
    except Exception as error:  # timm's strict load (RuntimeError), its checkpoint filters
        raise ConversionError(f'timm\'s published weights of {timm_name} ({source}) do not load into the '
                              f'twin\'s layout{layout}:\n{_first_lines(error)}') from error


def build_classifier(cfg: Config) -> torch.nn.Module:
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        return CLS_MODELS.build(cfg.model)


def input_size(cfg: Config, twin: TimmTwin) -> Tuple[int, int]:
    """(H, W) the config tests at: its test pipeline's CenterCrop, else the backbone's img_size, else the twin's."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or cfg.get('test_pipeline') or []
    size = next((t.get('crop_size') for t in pipeline if t.get('type') == 'CenterCrop'), None)
    size = size or cfg.model.get('backbone', {}).get('img_size') or twin.img_size
    return (size, size) if isinstance(size, int) else tuple(size)


def backbone_init_cfg(checkpoint: str) -> dict:
    return dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')


def as_dict_call(cfg: dict) -> str:
    return 'dict(' + ', '.join(f'{key}={value!r}' for key, value in cfg.items()) + ')'


def init_cfg_lines(dst: str) -> List[str]:
    """How a config uses DST (the lines the tool prints at the end)."""
    return ['the backbone (e.g. to fine-tune with another head; prefix: the keys are the classifier\'s):',
            f'    model = dict(backbone=dict(init_cfg={as_dict_call(backbone_init_cfg(dst))}))',
            'the whole classifier (backbone + head):',
            f'    load_from = {dst!r}',
            f'    # or: model = dict(init_cfg={as_dict_call(dict(type="Pretrained", checkpoint=dst))})']


def check_backbone_init(cfg: Config, checkpoint: str, state_dict: dict) -> List[str]:
    """The backbone entries the backbone's ``init_cfg=backbone_init_cfg(checkpoint)`` does not load as written
    (mmengine's PretrainedInit loads with strict=False, and a backbone's own init_weights may overwrite it)."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = backbone_init_cfg(checkpoint)
    model = build_classifier(cfg)
    # (redirect: mmengine prints where it loads the file from)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')), redirect_stdout(io.StringIO()):
        model.init_weights()
    loaded = model.state_dict()
    return [key for key, value in state_dict.items()
            if key.startswith('backbone.') and not torch.equal(loaded[key], value)]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------- the conversion
def convert(args) -> dict:
    import timm
    twin, timm_name, config_file, weights = resolve(args)
    cfg = Config.fromfile(config_file)
    config_name = osp.relpath(osp.abspath(config_file), osp.dirname(CONFIGS_DIR)).replace(os.sep, '/')
    converter = f'{twin.convert.__module__}.{twin.convert.__name__}'
    print(f'timm {timm_name} ({weights or "published weights"}) -> {config_name} with {converter}')
    reference = load_timm_model(twin, timm_name, weights)
    try:
        state_dict = twin.convert(reference.state_dict())
    except Exception as error:
        raise ConversionError(f'{converter} failed on the weights of {timm_name}: {_first_lines(error)}') from error
    model = build_classifier(cfg)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ConversionError(f'the converted weights do not fit the model of {config_name} (another size? '
                              f'another number of classes?):\n{_first_lines(error)}') from error
    print(f'{len(state_dict)} tensors, loaded with strict=True')
    parity = None
    if not args.no_verify:
        height, width = input_size(cfg, twin)
        images = torch.randn(BATCH_SIZE, 3, height, width, generator=torch.Generator().manual_seed(SEED))
        result = compare_logits(reference, model.eval(), images)
        bound = twin.tolerance * result['spread']
        print(f"max |logit diff| = {result['diff']:.3e} (bound {bound:.3e} = {twin.tolerance:g} x the std of "
              f"timm's logits {result['spread']:.3e}) on a random {BATCH_SIZE}x3x{height}x{width} batch")
        problems = parity_problems(twin, result)
        if problems:
            raise ConversionError(f'{config_name} with the converted weights does not compute what timm\'s '
                                  f'{timm_name} does: ' + '; '.join(problems) + f'. {args.dst} not written.')
        parity = dict(max_abs_logit_diff=result['diff'], timm_logit_std=result['spread'], bound=bound,
                      relative_tolerance=twin.tolerance, two_image_logit_diff_std=result['signal'],
                      input_shape=[BATCH_SIZE, 3, height, width], seed=SEED)
    pretrained_cfg = getattr(reference, 'pretrained_cfg', {}) or {}
    meta = dict(
        source=osp.abspath(weights) if weights else f'timm:{timm_name}',
        source_sha256=sha256(weights) if weights else None,
        timm_model=timm_name, timm_kwargs=dict(twin.timm_kwargs),
        timm_weights=None if weights else (pretrained_cfg.get('hf_hub_id') or pretrained_cfg.get('url')),
        timm_version=timm.__version__, mmeff_version=mmeff.__version__,
        converter=converter, config=config_name, strict=True, parity=parity,
        init_cfg=dict(backbone=backbone_init_cfg(args.dst), classifier=dict(type='Pretrained', checkpoint=args.dst)))
    return dict(cfg=cfg, checkpoint=dict(state_dict=state_dict, meta=meta))


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print(table_markdown())
        return
    # mmengine's INFO lines (the init_weights report of every tensor, ...) would bury the tool's
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        converted = convert(args)
        checkpoint = converted['checkpoint']
        partial = args.dst + '.partial'  # renamed to DST once the written file passed the init_cfg check
        if osp.dirname(args.dst):
            os.makedirs(osp.dirname(args.dst), exist_ok=True)
        torch.save(checkpoint, partial)
        try:
            if not args.no_verify:
                missed = check_backbone_init(converted['cfg'], partial, checkpoint['state_dict'])
                if missed:
                    raise ConversionError(f'init_cfg={backbone_init_cfg(args.dst)!r} on the backbone does not load '
                                          f'{len(missed)} of the written tensors (the backbone\'s init_weights '
                                          f'overwrites them?): {missed[:20]}')
                print('the backbone loads every tensor through its init_cfg (prefix=\'backbone.\')')
            os.replace(partial, args.dst)
        finally:
            if osp.exists(partial):
                os.remove(partial)
    except ConversionError as error:
        sys.exit(f'error: {error}')
    finally:
        logger.setLevel(level)
    print(f'wrote {args.dst}' + ('' if checkpoint['meta']['parity'] else ' (not verified: --no-verify)'))
    print('use it in a config as\n' + '\n'.join(init_cfg_lines(args.dst)))


if __name__ == '__main__':
    main()
