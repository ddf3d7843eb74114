"""Where the repository's configs are, for library code that defaults to one (deploy configs, the
configs of timm twins)."""
import os.path as osp

CONFIGS_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')


def config_path(relative: str) -> str:
    """``configs/<relative>``; a clear error when mmeff was installed without its configs."""
    path = osp.join(CONFIGS_DIR, relative)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist: mmeff\'s configs/ are in its git repository; install '
                                'mmeff from a clone (pip install -e .) or pass the config path explicitly')
    return path
