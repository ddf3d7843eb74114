# RT-DETR (any mmdet detector mmdeploy supports) -> ONNX Runtime, batch 1, 640x640, static graph.
_base_ = ['./_base_/detection_onnx.py']
backend_config = dict(type='onnxruntime')
