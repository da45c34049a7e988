"""A "cuda" device on a CPU machine for the `cuda`-marked tests: the emulated CUDA backend.

With MIXDIFF_TEST_EMU=1 (`make emu-test`) conftest loads libmixdiff_emu.so (build/emu: the ops' CUDA
glue and kernels compiled for the emulated CUDA execution model, csrc/emu) and every test runs inside
`EmulatedCuda`, a TorchDispatchMode under which:

- a tensor on device "cuda" is an `EmuTensor`: it reports device cuda and keeps its data in a CPU tensor
  (the emulated device memory); factories, `.to("cuda")`, `.cuda()` and `.cpu()` move between the two;
- every aten op on such tensors runs on their CPU data, and mixing them with CPU tensors other than
  0-d ones raises, as on a GPU;
- a `mixdiff` op called with cuda tensors runs `mixdiff_emu` (same schema: the device glue and kernels),
  once per entry of SCHEDULES (thread order, seed, preemption probability); the results must agree bit for
  bit, since every kernel of the library is deterministic, else the call raises `InterleavingMismatch`.

So the tests are unchanged: their "cuda" parameter compares the kernels with the CPU op and the
reference exactly as on a GPU. What the emulation checks and what it cannot: docs/architecture.md.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = Path(os.environ.get("MIXDIFF_EMU_BUILD", ROOT / "build" / "emu"))
CUDA = torch.device("cuda", 0)

# (order, seed, preemption probability) of the runs of each mixdiff op call; the first one's result is
# returned. Forward and reversed thread order, then two seeded random orders, the second with preemption
# at shared-memory loads (a non-atomic shared read-modify-write loses updates there).
SCHEDULES = (("forward", 0, 0.0), ("reverse", 0, 0.0), ("random", 1, 0.0), ("random", 2, 0.25))


class InterleavingMismatch(AssertionError):
    pass


def load() -> None:
    """Loads the emulated backend and gives `mixdiff_emu` the schemas of `mixdiff`."""
    import mixdiff_ext  # noqa: F401  (loads libmixdiff_ops.so, whose soname libmixdiff_emu.so links to)

    libs = glob.glob(str(BUILD_DIR / "libmixdiff_emu.so"))
    if not libs:
        raise RuntimeError(f"{BUILD_DIR}/libmixdiff_emu.so not found: build it with `make emu-build`")
    if torch.accelerator.current_accelerator() != torch.device("cuda"):
        raise RuntimeError(f"the emulated cuda device is not registered: run with LD_PRELOAD={BUILD_DIR}/"
                           "libmixdiff_emu_device.so (`make emu-test` does), which torch needs before it initialises")
    lib = torch.library.Library("mixdiff_emu", "FRAGMENT")
    for qualified in sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mixdiff::")):
        name, _, overload = qualified.split("::", 1)[1].partition(".")
        schema = str(getattr(getattr(torch.ops.mixdiff, name), overload or "default")._schema)
        lib.define(schema.split("::", 1)[1])
    load.library = lib  # keep the definitions alive
    torch.ops.load_library(libs[0])
    # torch initialises CUDA before any op that names the device (`x.to("cuda")`); there is none here,
    # and every such op reaches EmulatedCuda instead.
    torch.cuda._lazy_init = lambda: None
    if torch.ops.mixdiff_emu.emu_stats()[5] != 1:
        os.environ.setdefault("MIXDIFF_EMU_SANITIZERS", "1")


def stats() -> dict:
    keys = ("launches", "blocks", "barriers", "preemptions", "atomics")
    return dict(zip(keys, torch.ops.mixdiff_emu.emu_stats()[:5]))


class EmuTensor(torch.Tensor):
    """A tensor on the emulated "cuda" device; `inner` holds its data on the CPU."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            layout=inner.layout, device=CUDA, requires_grad=inner.requires_grad)
        r.inner = inner
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self):
        return f"EmuTensor({self.inner!r})"

    def __coerce_same_metadata_as_tangent__(self, expected_metadata, expected_type=None):
        # AOTAutograd (opcheck's test_aot_dispatch_dynamic) traced the backward for a plain tangent, since
        # its trace saw the fake tensors of the forward, not EmuTensors; the saved tensors are EmuTensors
        # at run time too, and every op of that graph takes them.
        return self if expected_type is torch.Tensor else None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _is_cuda(d) -> bool:
    return d is not None and torch.device(d).type == "cuda"


def _mixdiff_emu_op(func):
    return getattr(getattr(torch.ops.mixdiff_emu, func._schema.name.split("::")[1]), func._overloadname)


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    if t.dtype.is_floating_point and t.element_size() in (2, 4, 8):
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def _snapshot(out, args, func):
    written = [a for a, s in zip(args, func._schema.arguments) if s.alias_info is not None and s.alias_info.is_write]
    flat = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
    return [_bits(t).clone() for t in flat + [w for w in written if isinstance(w, torch.Tensor)]]


def _run_mixdiff(func, args, kwargs):
    """The emulated op under every schedule; results must match bit for bit."""
    op = _mixdiff_emu_op(func)
    first = snap0 = None
    for i, (order, seed, preempt) in enumerate(SCHEDULES):
        torch.ops.mixdiff_emu.emu_configure(order, seed, preempt)
        try:
            out = op(*args, **kwargs)
        finally:
            torch.ops.mixdiff_emu.emu_configure("forward", 0, 0.0)
        snap = _snapshot(out, args, func)
        if i == 0:
            first, snap0 = out, snap
        elif len(snap) != len(snap0) or not all(torch.equal(a, b) for a, b in zip(snap0, snap)):
            raise InterleavingMismatch(
                f"{func}: results under schedule {SCHEDULES[i]} differ from {SCHEDULES[0]} "
                "(a race between the threads of a block, or a read of memory nobody wrote)")
    return first


def _run_across_devices(func, args, kwargs):
    """A mixdiff op given cuda and CPU tensors: on a GPU the CUDA glue's device checks reject it. Here the
    emulated device's data is CPU data, so the CPU tensors go in as meta tensors (no data: a kernel that
    got them would fail): the glue sees two devices and raises its own message, whose device names are
    then put back ("cpu" is the emulated cuda, "meta" the CPU)."""
    def arg(x):
        if isinstance(x, EmuTensor):
            return x.inner
        return x.to("meta") if isinstance(x, torch.Tensor) else x

    try:
        cpu_kernel = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)  # the glue, not the meta tensors' key
        _mixdiff_emu_op(func).redispatch(cpu_kernel, *tree_map(arg, args), **tree_map(arg, kwargs))
    except RuntimeError as e:
        msg = re.sub(r"\bcpu\b", "cuda:0", str(e)).replace("meta", "cpu")
        raise RuntimeError(msg) from None
    raise RuntimeError(f"{func} accepted tensors on cuda and on the CPU: a kernel would have read host memory")


def _dispatch(func, args, kwargs):
    on_device = False
    other_cpu = False  # a CPU tensor that is not a 0-d scalar (which aten ops take with cuda ones)
    any_cpu = False

    def unwrap(x):
        nonlocal on_device, other_cpu, any_cpu
        if isinstance(x, EmuTensor):
            on_device = True
            return x.inner
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            any_cpu = True
            other_cpu = other_cpu or x.dim() > 0
        if isinstance(x, torch.device) and x.type == "cuda":
            return torch.device("cpu")
        return x

    device_kw = kwargs.get("device")
    u_args = tree_map(unwrap, args)
    u_kwargs = tree_map(unwrap, {k: v for k, v in kwargs.items() if k != "device"})
    to_device = _is_cuda(device_kw)
    if device_kw is not None:
        u_kwargs["device"] = torch.device("cpu")
    if func.namespace == "mixdiff" and on_device:
        if any_cpu:
            _run_across_devices(func, args, kwargs)
        out = _run_mixdiff(func, u_args, u_kwargs)
    else:
        if on_device and other_cpu and func not in _CROSS_DEVICE:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found cuda and cpu ({func})")
        out = func(*u_args, **u_kwargs)
    for a in tree_flat((args, kwargs)):
        if isinstance(a, EmuTensor):
            _sync_metadata(a)
    wrap_result = to_device or (on_device and not (device_kw is not None and not to_device))
    if not wrap_result:
        return out
    inner_of = {id(a.inner): a for a in tree_flat(args) if isinstance(a, EmuTensor)}

    def wrap(x):
        if isinstance(x, torch.Tensor) and not isinstance(x, EmuTensor):
            own = inner_of.get(id(x))  # in-place ops return their own argument
            return EmuTensor(x) if own is None else own
        return x

    return tree_map(wrap, out)


def _sync_metadata(t: EmuTensor) -> None:
    """After an op that changed its data's shape in place (as_strided_, resize_, t_, ...), the wrapper
    takes the same shape (set without dispatching, as torch's return_and_correct_aliasing does)."""
    i = t.inner
    if t.shape == i.shape and t.stride() == i.stride() and t.storage_offset() == i.storage_offset():
        return
    with torch.utils._mode_utils.no_dispatch():
        meta = torch._C._meta_in_tls_dispatch_include()
        torch._C._set_meta_in_tls_dispatch_include(True)
        try:
            t.as_strided_(i.shape, i.stride(), i.storage_offset())
        finally:
            torch._C._set_meta_in_tls_dispatch_include(meta)


def tree_flat(x):
    from torch.utils._pytree import tree_flatten

    return tree_flatten(x)[0]


# Ops that legitimately take tensors of two devices (copies between them).
_CROSS_DEVICE = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default, torch.ops.aten.copy.default,
                 # CPU index tensors index CUDA tensors
                 torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
                 torch.ops.aten._index_put_impl_.default}


def _cpu_indices(index):
    """Python lists in an index as CPU index tensors (which CUDA tensors accept too): torch's binding would
    build them on the indexed tensor's device below the dispatcher, where no "cuda" kernel exists."""
    if isinstance(index, list):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(_cpu_indices(i) for i in index)
    return index


class _PythonBindings(TorchFunctionMode):
    """The few Tensor methods whose Python binding works below the dispatcher, on EmuTensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and _is_cuda(kwargs.get("device")):
            return func(*args, **{**kwargs, "device": "cpu"}).to(CUDA)  # built on the host, then copied
        if args and isinstance(args[0], EmuTensor):
            if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
                args = (args[0], _cpu_indices(args[1]), *args[2:])
            elif func is torch.Tensor.tolist:  # copies to the host, as on a GPU
                return args[0].inner.tolist()
            elif func is torch.Tensor.numpy:
                raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first, as on a GPU")
        return func(*args, **kwargs)


class EmulatedCuda:
    """The context under which device "cuda" is the emulated backend."""

    def __enter__(self):
        self._modes = (_PythonBindings(), _EmuDispatch())
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)


class _EmuDispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})
