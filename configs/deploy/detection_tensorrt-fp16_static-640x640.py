# TensorRT FP16 engine, batch 1, 640x640: the RT-DETR paper's latency setting (T4, TensorRT FP16).
# Build on a GPU machine: python tools/deploy.py tensorrt configs/deploy/<this> <model config> ...
_base_ = ['./_base_/detection_onnx.py']
backend_config = dict(
    type='tensorrt',
    common_config=dict(fp16_mode=True, max_workspace_size=1 << 32),  # 4 GiB of the T4's 16
    model_inputs=[dict(input_shapes=dict(input=dict(
        min_shape=[1, 3, 640, 640], opt_shape=[1, 3, 640, 640], max_shape=[1, 3, 640, 640])))])
