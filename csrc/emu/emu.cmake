# The emulated CUDA backend (MIXDIFF_CUDA_EMU=ON, test-only; docs/architecture.md): libmixdiff_emu.so,
# the ops' *_cuda.cu kernels (rewritten by rewrite.py, otherwise unchanged) and *_cuda.cpp glue compiled
# by the host compiler against csrc/emu/include, registered for the CPU key of `mixdiff_emu`.
# The kernels' translation units report every load and store to runtime.cpp through GCC's
# ThreadSanitizer instrumentation calls (compiled with it, never linked to libtsan); with MIXDIFF_CUDA_EMU_SANITIZERS=ON they are built under ASan+UBSan instead.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  message(FATAL_ERROR "MIXDIFF_CUDA_EMU needs GCC (its -fsanitize=thread instrumentation calls), got ${CMAKE_CXX_COMPILER_ID}")
endif()

set(_emu_src ${CMAKE_CURRENT_BINARY_DIR}/emu_src)
file(GLOB _emu_headers CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include/mixdiff/*)
set(_emu_inputs ${MIXDIFF_OP_CUDA_KERNELS} ${_emu_headers})
set(_emu_kernels "")
foreach(_cu ${MIXDIFF_OP_CUDA_KERNELS})
  file(RELATIVE_PATH _rel ${CMAKE_CURRENT_SOURCE_DIR}/csrc ${_cu})
  list(APPEND _emu_kernels ${_emu_src}/${_rel}.cpp)
endforeach()
set(_emu_gen_headers "")
foreach(_h ${_emu_headers})
  file(RELATIVE_PATH _rel ${CMAKE_CURRENT_SOURCE_DIR}/csrc ${_h})
  list(APPEND _emu_gen_headers ${_emu_src}/${_rel})
endforeach()
add_custom_command(
  OUTPUT ${_emu_kernels} ${_emu_gen_headers}
  COMMAND ${Python_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/rewrite.py ${_emu_src}
          ${CMAKE_CURRENT_SOURCE_DIR}/csrc ${_emu_inputs}
  DEPENDS ${_emu_inputs} ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/rewrite.py
  COMMENT "Rewriting the CUDA sources for the emulated backend")

set(_emu_warn -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi)
if(MIXDIFF_CUDA_EMU_SANITIZERS)
  set(_emu_kernel_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  set(_emu_defs MIXDIFF_CUDA_EMU=1 MIXDIFF_EMU_SANITIZERS=1)
else()
  set(_emu_kernel_flags -fsanitize=thread --param=tsan-instrument-func-entry-exit=0)
  set(_emu_defs MIXDIFF_CUDA_EMU=1)
endif()

add_library(mixdiff_emu_kernels OBJECT ${_emu_kernels})
target_include_directories(mixdiff_emu_kernels BEFORE PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/include
  ${_emu_src}/include ${CMAKE_CURRENT_SOURCE_DIR}/csrc/ops)
target_compile_definitions(mixdiff_emu_kernels PRIVATE ${_emu_defs})
target_compile_options(mixdiff_emu_kernels PRIVATE -O2 -g ${_emu_warn} ${_emu_kernel_flags})

# Preloaded by the tests before torch initialises (emu_device.cpp); depends on torch only.
add_library(mixdiff_emu_device SHARED ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/emu_device.cpp)
target_link_libraries(mixdiff_emu_device PRIVATE mixdiff_torch)
target_compile_options(mixdiff_emu_device PRIVATE -O2 ${_emu_warn})

add_library(mixdiff_emu SHARED ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/runtime.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/emu_library.cpp ${MIXDIFF_OP_CUDA_GLUE} $<TARGET_OBJECTS:mixdiff_emu_kernels>)
target_include_directories(mixdiff_emu BEFORE PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/include
  ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include ${CMAKE_CURRENT_SOURCE_DIR}/csrc/ops)
target_compile_definitions(mixdiff_emu PRIVATE ${_emu_defs})
target_compile_options(mixdiff_emu PRIVATE -O2 -g ${_emu_warn})
# The glue's <op>_checked functions come from the installed package's libmixdiff_ops.so, which the
# package has loaded when the tests load this library (found by its soname).
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "from mixdiff_ext._library import _find_library; print(_find_library())"
  OUTPUT_VARIABLE _emu_ops_lib OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _emu_rc)
if(NOT _emu_rc EQUAL 0)
  message(FATAL_ERROR "MIXDIFF_CUDA_EMU links to the installed package's libmixdiff_ops.so: install it first (make install)")
endif()
target_link_libraries(mixdiff_emu PRIVATE "${_emu_ops_lib}" mixdiff_torch)
if(MIXDIFF_CUDA_EMU_SANITIZERS)
  target_compile_options(mixdiff_emu PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(mixdiff_emu PRIVATE -fsanitize=address,undefined)
endif()
