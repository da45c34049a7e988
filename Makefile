# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test cuda-compile-check emu-build emu-test emu-sanitize-test emu-mutation-check bench clean

install:
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .

demo: install
	$(PYTHON) -m mixdiff_ext.demo

test: install
	$(PYTHON) -m pytest -q tests

# Compiles every CUDA source with nvcc against the installed torch (CPU or CUDA), never links.
cuda-compile-check:
	cmake -S . -B build/cuda-compile-check -DMIXDIFF_CUDA=OFF -DMIXDIFF_CUDA_COMPILE_CHECK=ON \
	  -DCMAKE_CUDA_COMPILER=$$(command -v nvcc) -DPython_EXECUTABLE=$$(command -v $(PYTHON))
	cmake --build build/cuda-compile-check --target mixdiff_cuda_compile_check -j2

# The CUDA kernels on the emulated CUDA execution model (csrc/emu, docs/architecture.md): the `cuda`-marked
# tests run against it on this CPU.
EMU_BUILD ?= build/emu
EMU_CMAKE = cmake -S . -DMIXDIFF_CUDA=OFF -DMIXDIFF_CUDA_EMU=ON -DPython_EXECUTABLE=$$(command -v $(PYTHON))
emu-build: install
	$(EMU_CMAKE) -B $(EMU_BUILD)
	cmake --build $(EMU_BUILD) --target mixdiff_emu mixdiff_emu_device -j2

# libmixdiff_emu_device.so must be loaded before torch initialises (csrc/emu/emu_device.cpp).
emu-test: emu-build
	LD_PRELOAD=$(abspath $(EMU_BUILD))/libmixdiff_emu_device.so MIXDIFF_TEST_EMU=1 MIXDIFF_EMU_BUILD=$(EMU_BUILD) $(PYTHON) -m pytest -q -m "cuda and not dynamo" tests

# The same tests with the emulated kernels under AddressSanitizer + UndefinedBehaviorSanitizer.
emu-sanitize-test: install
	$(EMU_CMAKE) -B build/emu-sanitizers -DMIXDIFF_CUDA_EMU_SANITIZERS=ON
	cmake --build build/emu-sanitizers --target mixdiff_emu mixdiff_emu_device -j2
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so) $(abspath build/emu-sanitizers)/libmixdiff_emu_device.so" \
	  ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  MIXDIFF_TEST_EMU=1 MIXDIFF_EMU_BUILD=build/emu-sanitizers $(PYTHON) -m pytest -q -m "cuda and not dynamo" tests

# Injects known GPU bugs one at a time into a copy of the sources; the emulated tests must fail on each.
emu-mutation-check: emu-build
	$(PYTHON) csrc/emu/mutation_check.py

bench: install
	cd bench && $(PYTHON) bench_assign.py && $(PYTHON) bench_noise.py && $(PYTHON) bench_sampling.py && $(PYTHON) bench_ngmg.py

clean:
	rm -rf build
