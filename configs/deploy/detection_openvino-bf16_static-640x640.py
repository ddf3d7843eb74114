# OpenVINO, the FP32 IR compiled with INFERENCE_PRECISION_HINT=bf16 (CPUs with AVX512-BF16 or AMX).
_base_ = ['./detection_openvino_static-640x640.py']
backend_config = dict(precision='bf16')
