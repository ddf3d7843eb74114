from setuptools import find_packages, setup

setup(
    name='mmeff',
    version='0.1.0',
    description='Efficient vision transformers and real-time DETRs (RT-DETR) for OpenMMLab',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmeff', 'mmeff.*']),
    package_data={'mmeff.benchmark': ['wttf_paper.csv']},  # the efficient-ViT paper's results
    python_requires='>=3.9',
    # The tested versions of everything are pinned in requirements/constraints.txt.
    install_requires=[
        'mmengine>=0.10,<1', 'mmcv>=2.0.0rc4,<2.2', 'mmdet>=3.3,<3.4', 'mmpretrain>=1.2,<1.3', 'matplotlib', 'scipy'
    ],
    extras_require={
        # parity tests compare with timm and HF transformers; ruff lints (>=4.52 breaks `import mmdet.models`)
        'tests': ['pytest', 'pytest-timeout', 'ruff', 'timm>=1.0.16', 'transformers>=4.42,<4.52'],
        # mmdeploy 1.3.1 needs protobuf<=3.20.2, which onnx 1.17 and onnxruntime<=1.26 accept; OpenVINO and
        # NNCF (INT8) run the CPU path on OpenVINO's current API, not through mmdeploy's wrapper
        'deploy': ['mmdeploy==1.3.1', 'onnx==1.17.0', 'onnxruntime>=1.15,<=1.26', 'protobuf<=3.20.2',
                   'openvino>=2026.0', 'nncf>=3.0'],
        # the efficient-ViT paper's FLOP count (tools/benchmark.py --flops-convention wttf)
        'analysis': ['fvcore>=0.1.5'],
    },
)
