"""mmdeploy rewriters mmeff's exports need (active only inside mmdeploy's export context).

mmdeploy 1.3.1 exports every ``F.grid_sample`` as its custom op ``mmdeploy::grid_sampler`` (written
before ONNX had the op), which ONNX Runtime cannot load without mmdeploy's compiled custom-op
library (not in the PyPI wheel). ONNX has ``GridSample`` from opset 16 on, which ONNX Runtime,
OpenVINO and TensorRT (>= 8.5) implement natively, so for these backends mmeff emits the standard
op. torch's ``sort``/``argsort`` export is valid ONNX that ONNX Runtime 1.26 refuses to load, and
mmdeploy's ``scaled_dot_product_attention`` rewriter exports a training-mode ``Dropout`` (below).
"""
import math

import torch
from mmdeploy.core import FUNCTION_REWRITER, SYMBOLIC_REWRITER
from torch.onnx import symbolic_opset16

from .export import MIN_OPSET_GRID_SAMPLE

# The backends mmeff exports for (mmeff.deploy.backends); each rewriter below is registered for all.
EXPORT_BACKENDS = ('onnxruntime', 'openvino', 'tensorrt')


def for_backends(register, *args, **kwargs):
    """``register(*args, backend=b, **kwargs)`` applied for every backend of :data:`EXPORT_BACKENDS`."""
    def decorator(function):
        for backend in EXPORT_BACKENDS:
            function = register(*args, backend=backend, **kwargs)(function)
        return function
    return decorator


@for_backends(FUNCTION_REWRITER.register_rewriter, func_name='torch.nn.functional.scaled_dot_product_attention')
def scaled_dot_product_attention__inference(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                            scale=None, enable_gqa=False):
    """``softmax(q k^T * scale + mask) v`` without dropout: the exported graph runs inference.

    torch >= 2.0's ``nn.MultiheadAttention`` (RT-DETR's encoder and decoder self-attention) and
    mmpretrain's attention call ``F.scaled_dot_product_attention``, whose export goes through
    mmdeploy's default rewriter; that one calls ``torch.dropout(attn, dropout_p, train=True)``, so even
    an eval-mode model (``dropout_p=0``) exports ``Dropout(training_mode=True)``, which ONNX Runtime
    runs as an identity but OpenVINO's ONNX frontend refuses. It also divides by a given ``scale``
    (torch multiplies) and inverts boolean masks with ``not``; this one follows torch's definition.
    """
    if dropout_p:
        raise ValueError(f'scaled_dot_product_attention with dropout_p={dropout_p} in an export: the model '
                         'is in training mode; export it after model.eval()')
    if enable_gqa:
        raise NotImplementedError('scaled_dot_product_attention with enable_gqa=True has no mmeff export')
    scale = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if is_causal:
        attn_mask = torch.ones(query.size(-2), key.size(-2), dtype=torch.bool, device=query.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(~attn_mask, float('-inf'))
    attn = query @ key.transpose(-2, -1) * scale
    if attn_mask is not None:
        attn = attn + attn_mask
    return attn.softmax(-1) @ value


@for_backends(SYMBOLIC_REWRITER.register_symbolic, 'grid_sampler', is_pytorch=True)
def grid_sampler__onnx_standard(g, *args):
    """``grid_sampler`` as ONNX ``GridSample`` (torch's own opset-16 symbolic)."""
    opset = g.opset
    if opset < MIN_OPSET_GRID_SAMPLE:
        raise ValueError(f'grid_sample exports as ONNX GridSample from opset '
                         f'{MIN_OPSET_GRID_SAMPLE} on; onnx_config.opset_version is {opset}: '
                         f'raise it to {MIN_OPSET_GRID_SAMPLE}.')
    return symbolic_opset16.grid_sampler(g, *args)


def _sort_with_constant_k(g, input, dim: int, descending: int):
    """ONNX ``TopK`` over the whole axis, ``K`` a constant when the axis length is static.

    torch exports ``sort``/``argsort`` as ``TopK`` with ``K = Gather(Shape(x), [dim])``, which is
    valid ONNX, but ONNX Runtime 1.26 rejects it at load time ("K input must be a one-dimensional
    tensor of size 1"), so token reducers that sort (ToMe, EViT) would not load. A static axis
    length (all of mmeff's deploy configs are static in the image size) gives a constant ``K``.
    """
    from torch.onnx import symbolic_helper
    size = symbolic_helper._get_tensor_dim_size(input, dim)
    if size is None:  # a dynamic axis: torch's own export (ONNX Runtime 1.26 cannot load it)
        return symbolic_helper._sort_helper(g, input, dim, descending=descending)
    k = g.op('Constant', value_t=torch.tensor([size], dtype=torch.int64))
    return g.op('TopK', input, k, axis_i=dim, largest_i=descending, outputs=2)


@for_backends(SYMBOLIC_REWRITER.register_symbolic, 'sort', is_pytorch=True, arg_descriptors=['v', 'i', 'i', 'none'])
def sort__constant_k(g, input, dim, descending, out=None):
    """``sort`` through :func:`_sort_with_constant_k`."""
    return _sort_with_constant_k(g, input, dim, descending)


@for_backends(SYMBOLIC_REWRITER.register_symbolic, 'argsort', is_pytorch=True,
              arg_descriptors=['v', 'i', 'i', 'none'])
def argsort__constant_k(g, input, dim, descending, out=None):
    """``argsort`` through :func:`_sort_with_constant_k` (its indices)."""
    return _sort_with_constant_k(g, input, dim, descending)[1]
