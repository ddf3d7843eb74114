"""tools/convert_timm.py: timm weights (timm's random weights saved to a file: the download path cannot run
here) -> an mmeff checkpoint that loads through ``init_cfg=dict(type='Pretrained', ...)`` and gives timm's
logits; a converter that changes a tensor, an unknown timm name, a failed download: a clear non-zero exit.

Every twin of mmeff.converters.twins is converted; three representative ones (the ViT with timm kwargs, Swin
V2 with a pretrained-config overlay, EfficientFormerV2 with its distillation head folded) by default, the
rest in the slow suite.
"""
import importlib.util
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.twins import TIMM_TWINS, compare_logits, create_timm_model, parity_problems
from mmeff.paths import config_path
from mmeff.registry import CLS_MODELS

from conftest import REPO, run_tool, run_tool_cmd
from helpers.timm_parity import randomize_scaled_

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')
timm = pytest.importorskip('timm')

TOOL = 'tools/convert_timm.py'
RESNET18 = 'hvit/resnet/resnet18_in1k-224.py'
# the default suite's twins, each saved in another of the layouts the tool reads
DEFAULT_TWINS = {
    'vit/vit/vit_tiny_p16_in1k-224.py': 'safetensors',
    'hvit/swinv2/swinv2_tiny_w7_in1k-224.py': 'model',
    'hvit/efficientformerv2/efficientformerv2_s0_in1k-224.py': 'state_dict',
}
LAYOUTS = ('plain', 'model', 'state_dict', 'safetensors')


def _tool():
    spec = importlib.util.spec_from_file_location('convert_timm', osp.join(REPO, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_timm_weights(twin, directory, layout='plain'):
    """timm's model of ``twin`` with random weights (randomize_scaled_: logits that depend on the input),
    saved as a bare state dict (.pth), ``{'model': ...}`` (.pth), ``{'state_dict': ...}`` (.bin) or
    safetensors; returns (the timm model, the file)."""
    reference = create_timm_model(twin)
    randomize_scaled_(reference)
    state_dict = reference.state_dict()
    if layout == 'safetensors':
        from safetensors.torch import save_file
        path = directory / 'timm.safetensors'
        # cloned: safetensors refuses tensors that share memory (CoaT's shared position encodings)
        save_file({key: value.clone().contiguous() for key, value in state_dict.items()}, str(path))
    else:
        path = directory / ('timm.bin' if layout == 'state_dict' else 'timm.pth')
        wrapped = {'plain': state_dict, 'model': {'model': state_dict, 'epoch': 3},
                   'state_dict': {'state_dict': state_dict, 'epoch': 3}}[layout]
        torch.save(wrapped, path)
    return reference, path


def build(config, **init_cfgs):
    """The classifier of ``configs/<config>`` after ``init_weights`` with ``init_cfgs`` (``model=``, ``backbone=``)
    set, eval mode."""
    cfg = Config.fromfile(config_path(config))
    if 'model' in init_cfgs:
        cfg.model.init_cfg = init_cfgs['model']
    if 'backbone' in init_cfgs:
        cfg.model.backbone.init_cfg = init_cfgs['backbone']
    model = CLS_MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def twin_params():
    for i, config in enumerate(TIMM_TWINS):
        layout = DEFAULT_TWINS.get(config, LAYOUTS[i % len(LAYOUTS)])
        yield pytest.param(config, layout, i % 2 == 0, marks=[] if config in DEFAULT_TWINS else [pytest.mark.slow],
                           id=config)


def test_default_twins_are_registered():
    assert set(DEFAULT_TWINS) <= set(TIMM_TWINS)


@pytest.mark.parametrize('config,layout,by_config', list(twin_params()))
def test_converted_checkpoint_loads_through_init_cfg_with_timms_logits(config, layout, by_config, tmp_path):
    twin = TIMM_TWINS[config]
    reference, src = save_timm_weights(twin, tmp_path, layout)
    dst = tmp_path / 'out' / 'mmeff.pth'
    # the timm model of a file: from the twin of --config, or --timm-model (then the config is the twin's)
    name_args = ['--config', f'configs/{config}'] if by_config else ['--timm-model', twin.timm_name]
    proc = run_tool(TOOL, str(src), str(dst), *name_args)
    assert 'max |logit diff| = ' in proc.stdout and f"checkpoint='{dst}', prefix='backbone.'" in proc.stdout
    # the tool re-initialised the backbone from DST through that init_cfg and compared every tensor
    # (by hand: test_backbone_init_cfg_needs_the_prefix)
    assert "the backbone loads every tensor through its init_cfg (prefix='backbone.')" in proc.stdout
    checkpoint = torch.load(dst, map_location='cpu')  # weights_only: plain types only
    meta = checkpoint['meta']
    assert meta['timm_model'] == twin.timm_name and meta['config'] == f'configs/{config}'
    assert meta['converter'] == f'mmeff.converters.timm.{twin.convert.__name__}' and meta['source'] == str(src)
    assert meta['parity']['max_abs_logit_diff'] <= meta['parity']['bound'] == pytest.approx(
        twin.tolerance * meta['parity']['timm_logit_std'])
    assert all(key.startswith(('backbone.', 'head.')) for key in checkpoint['state_dict'])

    # the whole classifier through the classifier's init_cfg: timm's logits, on another batch than the tool's
    model = build(config, model=dict(type='Pretrained', checkpoint=str(dst)))
    images = torch.randn(2, 3, twin.img_size, twin.img_size, generator=torch.Generator().manual_seed(7))
    result = compare_logits(reference, model, images)
    assert not parity_problems(twin, result), (parity_problems(twin, result), result)


@pytest.fixture(scope='module')
def resnet18_file(tmp_path_factory):
    return save_timm_weights(TIMM_TWINS[RESNET18], tmp_path_factory.mktemp('resnet18'))[1]


CORRUPTING_RUN = '''
import dataclasses, runpy, sys
from mmeff.converters.twins import TIMM_TWINS
config, key = sys.argv[1:3]
twin = TIMM_TWINS[config]


def convert(state_dict):  # the twin's converter, one tensor changed by 1%
    converted = twin.convert(state_dict)
    converted[key] = converted[key] * 1.01
    return converted


TIMM_TWINS[config] = dataclasses.replace(twin, convert=convert)
sys.argv = ['tools/convert_timm.py', *sys.argv[3:]]
runpy.run_path('tools/convert_timm.py', run_name='__main__')
'''


def test_a_changed_tensor_fails_the_verification(resnet18_file, tmp_path):
    """A converter that changes one tensor: the tool exits 1 naming the diff and the bound, DST not written."""
    dst = tmp_path / 'mmeff.pth'
    proc = run_tool_cmd([sys.executable, '-c', CORRUPTING_RUN, RESNET18, 'backbone.layer3.0.conv1.weight',
                         str(resnet18_file), str(dst), '--timm-model', 'resnet18'], check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'max |logit diff| = ' in proc.stdout and 'does not compute what timm' in proc.stderr, proc.stderr
    assert not dst.exists() and not (tmp_path / 'mmeff.pth.partial').exists()


def test_no_verify_writes_without_parity(resnet18_file, tmp_path, capsys):
    dst = tmp_path / 'mmeff.pth'
    _tool().main([str(resnet18_file), str(dst), '--config', RESNET18, '--no-verify'])
    out = capsys.readouterr().out
    assert 'max |logit diff|' not in out and 'not verified' in out and 'loaded with strict=True' in out
    assert torch.load(dst, map_location='cpu')['meta']['parity'] is None


def test_weights_of_another_model_are_refused(resnet18_file, tmp_path):
    """ResNet-18 weights named as ResNet-34: timm's strict load fails, the tool says so."""
    with pytest.raises(SystemExit) as error:
        _tool().main([str(resnet18_file), str(tmp_path / 'mmeff.pth'), '--timm-model', 'resnet34'])
    message = str(error.value.code)
    assert "does not load into timm's resnet34" in message and 'layer1.2.conv1.weight' in message, message
    assert not (tmp_path / 'mmeff.pth').exists()


def test_unknown_timm_name_lists_the_twins(tmp_path):
    proc = run_tool(TOOL, 'vit_huge_patch14_224', str(tmp_path / 'mmeff.pth'), check=False)
    assert proc.returncode == 1 and 'vit_huge_patch14_224 is not the timm twin of any mmeff config' in proc.stderr
    for twin in TIMM_TWINS.values():
        assert f'configs/{twin.config}' in proc.stderr and twin.timm_name in proc.stderr


@pytest.mark.parametrize('args,message', [
    (['{src}', '{dst}'], 'which timm model are the weights of'),  # a file: neither --timm-model nor --config
    (['{src}', '{dst}', '--config', 'configs/mixing/resnet18_demo-64.py'], 'is not in the twin table'),
    (['{src}', '{dst}', '--timm-model', 'resnet18', '--config', 'hvit/resnet/resnet34_in1k-224.py'],
     'resnet18 is the twin of configs/hvit/resnet/resnet18_in1k-224.py, not of'),
    (['resnet18', '{dst}', '--timm-model', 'resnet18'], '--timm-model is for a weight file'),
    (['missing.safetensors', '{dst}'], 'no such file: missing.safetensors'),
    (['mixer_s16_224', '{dst}'], 'timm publishes no weights for mixer_s16_224'),
    (['vit_tiny_patch16_224', '{dst}'], "do not load into timm's vit_tiny_patch16_224 built as the twin (no_embed"),
])
def test_unresolvable_command_lines_are_refused(args, message, resnet18_file, tmp_path):
    with pytest.raises(SystemExit) as error:
        _tool().main([a.format(src=resnet18_file, dst=tmp_path / 'mmeff.pth') for a in args])
    assert message in str(error.value.code), error.value.code
    assert not (tmp_path / 'mmeff.pth').exists()


def test_failed_download_is_reported(monkeypatch, tmp_path):
    """No network to the weight hosts: timm.create_model(pretrained=True) raises what huggingface_hub raises
    here (LocalEntryNotFoundError after a ConnectionError); the tool says it could not download, nothing
    is written."""
    from huggingface_hub.errors import LocalEntryNotFoundError
    from requests.exceptions import ConnectionError

    def create_model(name, pretrained=False, **kwargs):
        assert pretrained
        try:
            raise ConnectionError('Failed to resolve huggingface.co')
        except ConnectionError as cause:
            raise LocalEntryNotFoundError(
                'An error happened while trying to locate the file on the Hub and we cannot find the requested '
                'files in the local cache. Please check your connection and try again or make sure your Internet '
                'connection is on.') from cause

    monkeypatch.setattr(timm, 'create_model', create_model)
    dst = tmp_path / 'mmeff.pth'
    with pytest.raises(SystemExit) as error:
        _tool().main(['swin_tiny_patch4_window7_224.ms_in1k', str(dst)])
    message = str(error.value.code)
    assert "could not download timm's published weights of swin_tiny_patch4_window7_224.ms_in1k" in message
    assert 'timm/swin_tiny_patch4_window7_224.ms_in1k' in message and 'LocalEntryNotFoundError' in message
    assert 'python tools/convert_timm.py swin_tiny_patch4_window7_224.ms_in1k.pth DST --timm-model' in message
    assert not dst.exists()


def test_list_prints_the_table_docs_timm_weights_shows(capsys):
    tool = _tool()
    tool.main(['--list'])
    table = capsys.readouterr().out.strip()
    assert table == tool.table_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(TIMM_TWINS)
    for row, twin in zip(rows, TIMM_TWINS.values()):
        assert f'`configs/{twin.config}` | `{twin.timm_name}` |' in row and f'| {twin.tolerance:g} |' in row
    with open(osp.join(REPO, 'docs', 'timm_weights.md')) as f:
        assert table in f.read(), 'docs/timm_weights.md: paste the output of python tools/convert_timm.py --list'


def test_backbone_init_cfg_needs_the_prefix(resnet18_file, tmp_path):
    """What the printed init_cfg line guards against: without prefix='backbone.', mmengine's PretrainedInit
    (strict=False) finds none of the classifier's keys in the backbone and loads nothing, silently."""
    dst = tmp_path / 'mmeff.pth'
    _tool().main([str(resnet18_file), str(dst), '--config', RESNET18, '--no-verify'])
    written = torch.load(dst, map_location='cpu')['state_dict']
    backbone = build(RESNET18, backbone=dict(type='Pretrained', checkpoint=str(dst))).backbone
    assert not torch.equal(backbone.conv1.weight, written['backbone.conv1.weight'])
    backbone = build(RESNET18, backbone=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.')).backbone
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, written['backbone.' + key]), key


def test_a_derived_config_gets_the_converter_of_the_timm_models_twin(resnet18_file, tmp_path, capsys):
    """A config outside the table (here: a copy of the twin's with another drop-path rate) converts with the
    converter of --timm-model's twin and is checked against its own model."""
    derived = tmp_path / 'resnet18_derived.py'
    derived.write_text(f"_base_ = [{config_path(RESNET18)!r}]\nmodel = dict(backbone=dict(drop_path_rate=0.1))\n")
    dst = tmp_path / 'mmeff.pth'
    _tool().main([str(resnet18_file), str(dst), '--config', str(derived), '--timm-model', 'resnet18'])
    assert 'max |logit diff| = ' in capsys.readouterr().out
    assert torch.load(dst, map_location='cpu')['meta']['converter'].endswith('timm_resnet_to_mmeff')


def smallest_twin_of_each_architecture():
    seen = set()
    for config, twin in TIMM_TWINS.items():
        if twin.arch not in seen:
            seen.add(twin.arch)
            yield pytest.param(config, id=twin.arch)


@pytest.mark.parametrize('config', list(smallest_twin_of_each_architecture()))
def test_every_twin_backbone_loads_all_its_tensors_through_a_pretrained_init_cfg(config, tmp_path):
    """What the backbone init_cfg line needs of the backbone, without timm: mmengine's PretrainedInit loads
    (strict=False) at the end of the backbone's own init, so a backbone that mangles a dict init_cfg
    (``list(init_cfg)``: NeXt-ViT, FocalNet, EfficientViT, CoaT did) or re-draws tensors after it (the class
    tokens of CaiT and CoaT did) keeps random weights, silently."""
    cfg = Config.fromfile(config_path(config)).model.backbone
    source = CLS_MODELS.build(cfg)
    randomize_scaled_(source)  # every tensor other than any init would give
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    cfg.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    target = CLS_MODELS.build(cfg)
    target.init_weights()
    expected = source.state_dict()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
