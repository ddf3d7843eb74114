# OpenVINO FP32, 640x640, any batch size: only the batch axis is dynamic (as the ONNX Runtime one).
_base_ = ['./detection_onnxruntime_dynamic-batch-640x640.py']
backend_config = dict(type='openvino', precision='fp32')
