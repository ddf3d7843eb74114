"""mmdeploy rewriters mmeff's exports need (active only inside mmdeploy's export context).

mmdeploy 1.3.1 exports every ``F.grid_sample`` as its custom op ``mmdeploy::grid_sampler`` (written
before ONNX had the op), which ONNX Runtime cannot load without mmdeploy's compiled custom-op
library (not in the PyPI wheel). ONNX has ``GridSample`` from opset 16 on, which ONNX Runtime and
TensorRT (>= 8.5) implement natively, so for these backends mmeff emits the standard op. And
torch's ``sort``/``argsort`` export is valid ONNX that ONNX Runtime 1.26 refuses to load (below).
"""
import torch
from mmdeploy.core import SYMBOLIC_REWRITER
from torch.onnx import symbolic_opset16

from .export import MIN_OPSET_GRID_SAMPLE


@SYMBOLIC_REWRITER.register_symbolic('grid_sampler', is_pytorch=True, backend='onnxruntime')
@SYMBOLIC_REWRITER.register_symbolic('grid_sampler', is_pytorch=True, backend='tensorrt')
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


@SYMBOLIC_REWRITER.register_symbolic('sort', is_pytorch=True,
                                     arg_descriptors=['v', 'i', 'i', 'none'], backend='onnxruntime')
def sort__constant_k(g, input, dim, descending, out=None):
    """``sort`` through :func:`_sort_with_constant_k`."""
    return _sort_with_constant_k(g, input, dim, descending)


@SYMBOLIC_REWRITER.register_symbolic('argsort', is_pytorch=True,
                                     arg_descriptors=['v', 'i', 'i', 'none'], backend='onnxruntime')
def argsort__constant_k(g, input, dim, descending, out=None):
    """``argsort`` through :func:`_sort_with_constant_k` (its indices)."""
    return _sort_with_constant_k(g, input, dim, descending)[1]
