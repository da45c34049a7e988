"""Loads the compiled ops library (libmixdiff_ops.so) into torch.ops.mixdiff."""
from __future__ import annotations

import glob
import json
import os

import torch

_LIB_NAME = "libmixdiff_ops.so"


def _find_library() -> str:
    # Editable installs keep the .so in site-packages while the sources stay here, so search every
    # entry of the package __path__, not only this file's folder.
    from . import __path__ as package_path

    for entry in package_path:
        for candidate in sorted(glob.glob(os.path.join(entry, _LIB_NAME))):
            return candidate
    raise ImportError(
        f"mixdiff_ext: compiled library {_LIB_NAME} not found in {list(package_path)}; "
        "install the package with `pip install --no-build-isolation -e .`"
    )


def check_cuda_compatible(info: dict, torch_cuda: str | None) -> None:
    """A library built with CUDA must run under a torch with the same CUDA major version."""
    if not info["cuda"]:
        return
    built_major = info["cuda_version"].split(".")[0]
    if torch_cuda is None or torch_cuda.split(".")[0] != built_major:
        raise ImportError(
            f"mixdiff_ext was built with CUDA {info['cuda_version']} but this torch has CUDA "
            f"{torch_cuda}; rebuild with `pip install --no-build-isolation -e .` in this environment"
        )


def load() -> dict:
    torch.ops.load_library(_find_library())
    info = json.loads(torch.ops.mixdiff.build_info())
    check_cuda_compatible(info, torch.version.cuda)
    return info
