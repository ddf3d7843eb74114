# ONNX Runtime, 640x640, any batch size: only the batch axis is dynamic (the image size stays
# static, so the anchors and sampling grids fold into constants).
_base_ = ['./_base_/detection_onnx.py']
backend_config = dict(type='onnxruntime')
onnx_config = dict(dynamic_axes=dict(input={0: 'batch'}, dets={0: 'batch'}, labels={0: 'batch'}))
