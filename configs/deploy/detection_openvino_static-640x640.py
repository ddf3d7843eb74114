# RT-DETR (any mmdet detector mmdeploy supports) -> OpenVINO IR (.xml/.bin), FP32, batch 1, 640x640.
# mmeff's own backend on OpenVINO's current API (mmeff/deploy/backends/openvino.py), not mmdeploy's wrapper.
_base_ = ['./_base_/detection_onnx.py']
backend_config = dict(type='openvino', precision='fp32')
