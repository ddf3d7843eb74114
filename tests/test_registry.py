"""`import mmeff` registers every mmeff module where OpenMMLab configs look for it."""
import inspect

import pytest
from mmengine.registry import DefaultScope

import mmeff
from mmeff import registry

REGISTRIES = {
    'mmdet': [registry.DET_MODELS, registry.DET_DATASETS, registry.DET_TASK_UTILS, registry.DET_TRANSFORMS,
              registry.DET_HOOKS],
    'mmpretrain': [registry.CLS_MODELS, registry.CLS_DATASETS],
}


def _mmeff_entries(reg):
    return {name: cls for name, cls in reg.module_dict.items() if cls.__module__.startswith('mmeff.')}


def test_every_mmeff_type_resolves_by_name_in_its_scope():
    found = 0
    for scope, regs in REGISTRIES.items():
        with DefaultScope.overwrite_default_scope(scope):
            for reg in regs:
                for name, cls in _mmeff_entries(reg).items():
                    assert reg.get(name) is cls, f'{name} does not resolve to mmeff\'s class in {scope}'
                    found += 1
    assert found >= 3
    assert registry.RUNNERS.get('MMEffRunner') is mmeff.engine.MMEffRunner


def test_backbones_are_reachable_from_both_scopes():
    from mmpretrain.models.heads import ClsHead  # a model family's own classifier head is mmpretrain's only
    det_backbones = {name for name, cls in _mmeff_entries(registry.DET_MODELS).items()
                     if cls.__module__.startswith('mmeff.models.backbones')}
    cls_backbones = {name for name, cls in _mmeff_entries(registry.CLS_MODELS).items()
                     if cls.__module__.startswith('mmeff.models.backbones') and not issubclass(cls, ClsHead)}
    assert det_backbones == cls_backbones


@pytest.mark.parametrize('reg', [registry.DET_MODELS, registry.CLS_MODELS])
def test_unknown_type_error_names_it(reg):
    with pytest.raises(KeyError, match='NoSuchMixer is not in the'):
        reg.build(dict(type='NoSuchMixer'))


def test_public_classes_are_documented():
    for reg in REGISTRIES['mmdet'] + REGISTRIES['mmpretrain']:
        for name, cls in _mmeff_entries(reg).items():
            assert inspect.getdoc(cls), f'{name} has no docstring'
