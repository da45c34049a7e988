"""Package-level behaviour: build information and the CUDA version check at import."""
from __future__ import annotations

import pytest
import torch

import mixdiff_ext
from mixdiff_ext import _library


def test_build_info_reports_the_build():
    info = mixdiff_ext.build_info()
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool)
    assert info["threads"] == torch.get_num_threads()
    assert info["parallel"] in ("openmp", "native")
    if info["cuda"]:
        assert info["cuda_archs"]


def test_ops_are_registered():
    for name in ("assign_nearest", "gmm_posterior", "estep_stats", "kmeans_stats", "ngmg"):
        assert hasattr(torch.ops.mixdiff, name)


@pytest.mark.parametrize("torch_cuda", [None, "12.8"])
def test_cuda_major_mismatch_is_a_clear_import_error(torch_cuda):
    info = {"cuda": True, "cuda_version": "13.0.88"}
    with pytest.raises(ImportError, match="built with CUDA 13.0.88"):
        _library.check_cuda_compatible(info, torch_cuda)


def test_matching_or_cpu_builds_pass_the_check():
    _library.check_cuda_compatible({"cuda": True, "cuda_version": "13.0.88"}, "13.0")
    _library.check_cuda_compatible({"cuda": False, "cuda_version": ""}, None)
