"""mixdiff_ext: diffusion models with Gaussian-mixture priors, with C++/CUDA kernels as torch ops."""
from __future__ import annotations

from . import _library

_BUILD = _library.load()

from . import ops  # noqa: E402  (registers fake kernels and autograd for the loaded ops)
from .ops import ngmg_loss  # noqa: E402
from .prior import GaussianMixturePrior, effort  # noqa: E402
from . import schedules  # noqa: E402
from .scheduler import MixtureNoiseScheduler  # noqa: E402
from . import data, metrics, nets  # noqa: E402
from .conditioning import GMMConditioner, attribute_classes  # noqa: E402
from .classifier import AttributeClassifier, AttributeObjective  # noqa: E402
from .models import MixDDPM, MixSGM  # noqa: E402
from .training import Trainer, TrainResult, train  # noqa: E402

__version__ = "0.1.0"


def build_info() -> dict:
    """How the compiled core was built, and what this process runs it with."""
    import torch

    info = dict(_BUILD)
    info["threads"] = torch.get_num_threads()
    info["torch_runtime_version"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info


__all__ = ["AttributeClassifier", "AttributeObjective", "GMMConditioner", "GaussianMixturePrior", "MixDDPM", "MixSGM",
           "MixtureNoiseScheduler", "TrainResult", "Trainer", "attribute_classes", "build_info", "data", "effort",
           "metrics", "nets", "ngmg_loss", "ops", "schedules", "train"]
