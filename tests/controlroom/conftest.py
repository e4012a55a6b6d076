# The proxy tests' real simulator and in-process proxy (sample config plus test overlays).
from tests.proxy.conftest import config_dir, proxy, sim

__all__ = ["config_dir", "proxy", "sim"]
