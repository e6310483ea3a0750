# find_package(Torch) for neurocore and for programs that use its package (neurocoreConfig.cmake).
# A CUDA build of torch looks for a CUDA toolkit even for CPU-only code, and FindCUDA guesses the
# toolkit from `which nvcc`: wrong where nvcc is a wrapper script (see cmake/build_config.py). Look at
# CUDA_HOME, CUDA_PATH and /usr/local/cuda first.
if(NOT CUDA_TOOLKIT_ROOT_DIR OR NOT EXISTS "${CUDA_TOOLKIT_ROOT_DIR}/include/cuda_runtime.h")
  foreach(_neurocore_root "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}" "/usr/local/cuda")
    if(_neurocore_root AND EXISTS "${_neurocore_root}/bin/nvcc" AND EXISTS "${_neurocore_root}/include/cuda_runtime.h")
      get_filename_component(_neurocore_root "${_neurocore_root}" REALPATH)
      set(CUDA_TOOLKIT_ROOT_DIR "${_neurocore_root}" CACHE PATH "CUDA toolkit root" FORCE)
      break()
    endif()
  endforeach()
endif()
