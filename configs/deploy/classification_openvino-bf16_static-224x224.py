# mmpretrain classifier -> OpenVINO, compiled with INFERENCE_PRECISION_HINT=bf16 (AVX512-BF16 or AMX).
_base_ = ['./classification_openvino_static-224x224.py']
backend_config = dict(precision='bf16')
