"""The one tested mmdeploy stack, and the scoped fix that lets mmdeploy 1.3.1 export with torch 2.x.

mmdeploy 1.3.1's rewriters patch the TorchScript ONNX exporter (symbolic functions, traced
functions). From torch 2.9 on ``torch.onnx.export`` defaults to the dynamo exporter, which ignores
those patches, and mmdeploy calls it without ``dynamo=False``. :func:`torchscript_onnx_export`
restores the TorchScript default only while an export runs, so importing mmeff changes nothing.
"""
import contextlib
import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Dict, Iterator

import torch

# Tested together on this project's stack (requirements/constraints.txt, extra ``deploy``).
# mmdeploy 1.3.1 pins protobuf<=3.20.2, which fixes onnx at 1.17 and onnxruntime at <=1.26.
TESTED_DEPLOY_STACK: Dict[str, str] = {
    'mmdeploy': '1.3.1',
    'onnx': '1.17.0',
    'onnxruntime': '1.26.0',
    'protobuf': '3.20.2',
    'torch': '2.14.1',
}


def installed_versions() -> Dict[str, str]:
    """Versions of the deploy stack's packages; 'missing' for those not installed."""
    found = {}
    for package in TESTED_DEPLOY_STACK:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = 'missing'
    return found


def check_deploy_stack() -> None:
    """Raise if the installed deploy stack is not the tested one (the export fix depends on it).

    Raises:
        RuntimeError: naming each mismatching package and the command that installs the tested set.
    """
    found = installed_versions()
    # Local builds such as 2.14.1+cpu are the same release.
    wrong = {name: found[name] for name, want in TESTED_DEPLOY_STACK.items()
             if found[name].split('+')[0] != want}
    if wrong:
        listed = ', '.join(f'{name} {have} (tested: {TESTED_DEPLOY_STACK[name]})'
                           for name, have in wrong.items())
        raise RuntimeError(
            f'mmeff.deploy is tested with {TESTED_DEPLOY_STACK} only; installed: {listed}. '
            'Install the tested set: pip install -e .[deploy] -c requirements/constraints.txt '
            '(mmdeploy goes in with --no-deps only if its pins conflict), or re-validate '
            'mmeff/deploy/compat.py for the new versions and update TESTED_DEPLOY_STACK.')


@contextlib.contextmanager
def torchscript_onnx_export() -> Iterator[None]:
    """Within the block, ``torch.onnx.export`` uses the TorchScript exporter (``dynamo=False``)
    unless a caller asks for dynamo explicitly; the original function is restored on exit."""
    check_deploy_stack()
    original = torch.onnx.export

    @functools.wraps(original)
    def export(*args, **kwargs):
        kwargs.setdefault('dynamo', False)
        return original(*args, **kwargs)

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original


@contextlib.contextmanager
def rewritten_methods_restored() -> Iterator[None]:
    """Put back, after the block, the static and class methods that mmdeploy's function rewriters
    patch: mmdeploy 1.3.1 restores them as plain functions (it saves ``getattr(cls, name)``), which
    breaks the class for the rest of the process (e.g. mmpretrain's Swin: ``ShiftWindowMSA.
    get_attn_mask`` then receives the instance as its first argument)."""
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.core.rewriters.rewriter_utils import import_function
    saved = []
    for path in FUNCTION_REWRITER._registry._rewrite_records:
        try:
            _, owner = import_function(path)
        except Exception:  # a codebase that is not installed (mmseg, mmocr, ...)
            continue
        name = path.rsplit('.', 1)[-1]
        raw = vars(owner).get(name) if owner is not None else None
        if isinstance(raw, (staticmethod, classmethod)):
            saved.append((owner, name, raw))
    try:
        yield
    finally:
        for owner, name, raw in saved:
            setattr(owner, name, raw)
