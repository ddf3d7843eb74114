"""`import mmeff` registers every mmeff module where OpenMMLab configs look for it."""
import ast
import inspect
from pathlib import Path

import mmengine.registry as mmengine_registry
import pytest
from mmengine.registry import DefaultScope

import mmeff
from mmeff import registry
from mmeff.models.layers import vit_blocks

REGISTRIES = {
    'mmdet': [registry.DET_MODELS, registry.DET_DATASETS, registry.DET_TASK_UTILS, registry.DET_TRANSFORMS,
              registry.DET_HOOKS, registry.DET_OPTIM_WRAPPER_CONSTRUCTORS, registry.DET_OPTIM_WRAPPERS],
    'mmpretrain': [registry.CLS_MODELS, registry.CLS_DATASETS, registry.CLS_OPTIM_WRAPPER_CONSTRUCTORS,
                   registry.CLS_OPTIM_WRAPPERS],
    'mmengine': [registry.RUNNERS, registry.LOOPS, mmengine_registry.HOOKS, mmengine_registry.DATA_SAMPLERS,
                 mmengine_registry.MODELS],
    'mmeff': [vit_blocks.TOKEN_MIXERS, vit_blocks.MLP_BLOCKS, vit_blocks.TOKEN_REDUCERS],
}
# The names the package's modules import these registries under (and decorate with).
REGISTRY_NAMES = {
    **{name: getattr(registry, name) for name in registry.__all__ if name != 'register_backbone'},
    'HOOKS': mmengine_registry.HOOKS, 'DATA_SAMPLERS': mmengine_registry.DATA_SAMPLERS,
    'MODELS': mmengine_registry.MODELS, 'TOKEN_MIXERS': vit_blocks.TOKEN_MIXERS,
    'MLP_BLOCKS': vit_blocks.MLP_BLOCKS, 'TOKEN_REDUCERS': vit_blocks.TOKEN_REDUCERS,
}

# Every mmeff module, by the registry it is in: what the README's configs may name.
BACKBONES = {
    'CaiT', 'CoaT', 'CvT', 'EfficientFormerV2', 'EfficientMod', 'EfficientViTMIT', 'FastViT', 'FocalNet',
    'HGNetv2', 'HaloNet', 'HiViTPyramid', 'LeanMlpMixer', 'LeanSwinTransformer', 'LeanXCiT', 'NextViT',
    'PResNet', 'ResT', 'STViTSwin', 'SwiftFormer', 'SwinTransformerV2Strict', 'ViTWithMixer', 'WaveViT',
}
EXPECTED = {
    'DET_MODELS': BACKBONES | {
        # RT-DETR: encoder (neck), decoder, head, loss, detector, multi-scale batch resize
        'AIFI', 'AIFILayer', 'CCFF', 'CSPRepLayer', 'HybridEncoder', 'RepVGGBlock', 'RTDETR',
        'RTDETRDecoderLayer', 'RTDETRHead', 'RTDETRMSDeformableAttention', 'RTDETRTransformerDecoder',
        'RTDETRVarifocalLoss', 'BatchSyncChoiceResize',
        'SimpleFeaturePyramid',  # ViTDet's neck, for the plain-ViT detectors
    },
    'CLS_MODELS': BACKBONES | {'AuxLossImageClassifier', 'EfficientViTClsHead'},
    'DET_DATASETS': {'DemoCocoDataset'},
    'CLS_DATASETS': {'DemoClassificationDataset'},
    'DET_OPTIM_WRAPPER_CONSTRUCTORS': {'NoDecayNormBiasConstructor', 'SharedModuleConstructor'},
    'CLS_OPTIM_WRAPPER_CONSTRUCTORS': {'SharedModuleConstructor'},
    'DET_OPTIM_WRAPPERS': {'CPUAmpOptimWrapper'},  # --amp on a CPU, in both scopes
    'CLS_OPTIM_WRAPPERS': {'CPUAmpOptimWrapper'},
    'RUNNERS': {'MMEffRunner'},
    'LOOPS': {'PrecisionTestLoop'},  # tools/test.py --precision
    'DET_TASK_UTILS': set(),
    'DET_TRANSFORMS': set(),
    'DET_HOOKS': set(),
    'HOOKS': {'RandomStateHook', 'SafeCheckpointHook'},
    'DATA_SAMPLERS': {'SampleSeededSampler'},
    'MODELS': {'RepBN', 'PRepBN'},  # norm layers, for mmcv's build_norm_layer in every scope
    'TOKEN_MIXERS': {
        'SoftmaxAttention', 'TalkingHeadsAttention', 'LinearAttention', 'PerformerAttention',
        'LinformerAttention', 'NystromAttention', 'LSHAttention', 'SinkhornAttention', 'RoutingAttention',
        'ProbSparseAttention', 'HydraAttention', 'PolySelfAttention', 'SimplifiedLinearAttention',
        'FactorizedDenseSynthesizer', 'FactorizedRandomSynthesizer', 'FourierMixing', 'GlobalFilter',
        'AdaptiveFourierMixing',
    },
    'MLP_BLOCKS': {'Mlp', 'SwitchMlp'},
    'TOKEN_REDUCERS': {'EViTReorganize', 'ToMeMerge', 'TokenLearner', 'TokenLearnerV11', 'DynamicViTPredictor',
                       'AViTHalting'},
}

# The deployed models of ``tools/test.py --backend``: registered by ``import mmeff.deploy`` (the deploy
# extra), not by ``import mmeff``.
DEPLOYED = {'DET_MODELS': {'DeployedDetector'}, 'CLS_MODELS': {'DeployedClassifier'}}
try:
    import mmeff.deploy  # noqa: F401
    REGISTERED = {name: expected | DEPLOYED.get(name, set()) for name, expected in EXPECTED.items()}
except ImportError:
    REGISTERED = EXPECTED


def _mmeff_entries(reg):
    return {name: cls for name, cls in reg.module_dict.items() if cls.__module__.startswith('mmeff.')}


def _registry_name(reg):
    [name] = [name for name, other in REGISTRY_NAMES.items() if other is reg]
    return name


def test_every_mmeff_type_resolves_by_name_in_its_scope():
    registered = {}
    for scope, regs in REGISTRIES.items():
        with DefaultScope.overwrite_default_scope(scope):
            for reg in regs:
                entries = _mmeff_entries(reg)
                registered[_registry_name(reg)] = set(entries)
                for name, cls in entries.items():
                    assert reg.get(name) is cls, f'{name} does not resolve to mmeff\'s class in {scope}'
    assert set(registered) == set(REGISTERED)
    for name, expected in REGISTERED.items():
        assert registered[name] == expected, (name, 'missing', expected - registered[name],
                                              'unexpected', registered[name] - expected)
    assert registry.RUNNERS.get('MMEffRunner') is mmeff.engine.MMEffRunner


def _decorated_classes():
    """{registry name: class names} from the source: classes decorated ``@<REGISTRY>.register_module()``
    or ``@register_backbone`` (both model registries) anywhere in the package, imported or not."""
    found = {}
    for path in Path(mmeff.__file__).parent.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Name) and decorator.id == 'register_backbone':
                    names = ['DET_MODELS', 'CLS_MODELS']
                elif (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                      and decorator.func.attr == 'register_module' and isinstance(decorator.func.value, ast.Name)):
                    names = [decorator.func.value.id]
                else:
                    continue
                registered_as = {kw.arg: kw.value for kw in getattr(decorator, 'keywords', [])}.get('name')
                for name in names:
                    found.setdefault(name, set()).add(
                        registered_as.value if isinstance(registered_as, ast.Constant) else node.name)
    return found


def test_every_registering_class_in_the_source_is_registered_by_import_mmeff():
    """A module in a file ``import mmeff`` does not import would be missing from the registry (and
    from EXPECTED's check above, had it been written from the registry); mmeff.deploy's (DEPLOYED) are
    registered by ``import mmeff.deploy``."""
    decorated = _decorated_classes()
    assert set(decorated) <= set(EXPECTED), set(decorated) - set(EXPECTED)
    for name, expected in EXPECTED.items():
        expected = expected | DEPLOYED.get(name, set())
        assert decorated.get(name, set()) == expected, (name, decorated.get(name, set()) ^ expected)


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
