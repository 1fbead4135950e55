"""Finds and loads libdsv4_torch_ops.so, which registers the torch.ops.dsv4.* kernels."""
import os

import torch

LIBRARY_NAME = "libdsv4_torch_ops.so"
ENV_VAR = "DSV4_TORCH_OPS_LIB"


def library_path() -> str:
    """$DSV4_TORCH_OPS_LIB if set (it must exist), else the library next to this package."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not os.path.isfile(explicit):
            raise ImportError(f"dsv4_torch: {ENV_VAR}={explicit} is not a file")
        return explicit
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    if os.path.isfile(beside):
        return beside
    raise ImportError(
        f"dsv4_torch: {LIBRARY_NAME} not found (looked for ${ENV_VAR} and {beside}); build it with "
        f"`bash scripts/torch_ops.sh` (or cmake -DDSV4_TORCH_OPS=ON) and set "
        f"{ENV_VAR}=<build dir>/torch_ops/{LIBRARY_NAME}, or copy it next to dsv4_torch/__init__.py")


def load() -> str:
    path = library_path()
    torch.ops.load_library(path)
    return path
