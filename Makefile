# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test cuda-compile-check bench clean

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

bench: install
	cd bench && $(PYTHON) bench_assign.py && $(PYTHON) bench_noise.py && $(PYTHON) bench_sampling.py && $(PYTHON) bench_ngmg.py

clean:
	rm -rf build
