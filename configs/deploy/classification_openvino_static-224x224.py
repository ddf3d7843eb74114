# mmpretrain classifier -> OpenVINO IR, FP32, batch 1, 224x224 (mmeff/deploy/backends/openvino.py).
_base_ = ['./classification_onnxruntime_static-224x224.py']
backend_config = dict(type='openvino', precision='fp32')
