"""Makes `import dsv4_torch` work from a checkout: torch_ops/ on sys.path and, unless
DSV4_TORCH_OPS_LIB is set, the library from build-torch (scripts/torch_ops.sh's build dir)."""
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "torch_ops"))
_DEFAULT_LIB = os.path.join(REPO, "build-torch", "torch_ops", "libdsv4_torch_ops.so")
if "DSV4_TORCH_OPS_LIB" not in os.environ and os.path.isfile(_DEFAULT_LIB):
    os.environ["DSV4_TORCH_OPS_LIB"] = _DEFAULT_LIB
