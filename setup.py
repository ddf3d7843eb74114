import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

# What OpenMMLab's mim looks for inside the installed package (as mmdet's setup.py provides it).
MIM_FILES = ('tools', 'configs', 'demo', 'model-index.yml')


def add_mim_extension():
    """``mmeff/.mim``: links to the repository's tools, configs, demo and model index for an editable
    install, copies for a wheel, so that ``mim search/train/test mmeff`` find them."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(root, 'mmeff', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


add_mim_extension()
setup(
    name='mmeff',
    version='0.1.0',
    description='Efficient vision transformers and real-time DETRs (RT-DETR) for OpenMMLab',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmeff', 'mmeff.*']),
    # the efficient-ViT paper's results; mim's tools, configs, demo and model index
    package_data={'mmeff.benchmark': ['wttf_paper.csv'], 'mmeff': ['.mim/**/*', '.mim/model-index.yml']},
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
