"""What ``tools/train.py`` and ``tools/test.py`` share: their common flags, loading the config, and
building the runner after the data pre-flight checks."""
import argparse
import os
import os.path as osp

import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmeff.datasets import check_data_config


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='the directory for logs, checkpoints and metrics')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='allow checkpoints that hold arbitrary pickled Python objects (only for files you trust)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. train_dataloader.batch_size=4')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)  # set by old launchers


def load_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied; work_dir: flag > config > ./work_dirs/<name>."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
    return cfg


def build_runner(cfg: Config) -> Runner:
    """Check the data config, then build the config's runner (``MMEffRunner`` unless it names one)."""
    check_data_config(cfg)
    cfg.setdefault('runner_type', 'MMEffRunner')
    return RUNNERS.build(cfg)


def finish_distributed() -> None:
    """End the process group before the interpreter does: a gloo group left to the interpreter's
    shutdown can abort the process after a successful run ("terminate called without an active
    exception")."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()  # no rank tears its connections down while another is still in a collective
        torch_dist.destroy_process_group()
