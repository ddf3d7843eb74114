# OpenVINO INT8: the FP32 IR quantized by NNCF post-training quantization (mmeff/deploy/quantize.py),
# calibrated on images of the model config's own test pipeline. docs/deploy.md#int8 records what each
# part costs when quantized (the ignored scope below stays in f32).
_base_ = ['./detection_openvino_static-640x640.py']
backend_config = dict(
    precision='int8',
    calibration=dict(
        dataset=None,  # None: the model config's test_dataloader.dataset; or a dataset config / config file
        num_images=300,
        model_type='transformer',  # nncf.ModelType.TRANSFORMER
        ignored_scope=None))
