"""The GPUs and drivers the CUDA kernels are built for (the one place these lists live), and the
macro that compiles a .cu.cc for them with the compiler its file name calls for.

- Portable kernels, every *.cu.cc except *_sm90a.cu.cc: clang-16 + CUDA 12.9 (cuda_clang_object),
  cubins for PORTABLE_ARCHS plus PTX for the newest, so they load on every driver TensorFlow 2.21
  supports (>= PORTABLE_MIN_DRIVER) and run on later GPUs through the driver's PTX JIT.
- Hopper kernels, *_sm90a.cu.cc: nvcc 13 (cuda_object), sm_90a cubins only (wgmma, setmaxnreg:
  PTX that clang-16 cannot emit); they load on drivers >= SM90A_MIN_DRIVER.
Each .cu.cc registers its own fatbin, so an sm_90a module that cannot load on an older driver
fails alone and the portable kernels still run.
"""

load("//third_party/cuda:cuda.bzl", "cuda_clang_object", "cuda_object")

PORTABLE_ARCHS = ["70", "75", "80", "86", "89", "90"]
PORTABLE_PTX_ARCH = "90"

# sm_90's PTX is raised from clang-16's ISA 7.8 to 8.1 for the vector float atomics of the
# backward scatter (device_util.cuh). Its PTX then JIT-compiles on drivers >= 530 only, which every
# GPU newer than sm_90 needs anyway; the cubins are unaffected.
PORTABLE_PTX_ISA = {"90": "8.1"}
PORTABLE_MIN_DRIVER = "525"
SM90A_MIN_DRIVER = "580"

_COMMON_COPTS = ["-std=c++17", "-O3", "-DNDEBUG", "-I."]

# For the error that says which GPUs and driver the portable kernels need (cuda_core.cu.cc).
_PORTABLE_DEFINES = [
    '-DTFDCN_CUDA_TARGETS="%s (later GPUs through PTX)"' % ", ".join([a[:-1] + "." + a[-1] for a in PORTABLE_ARCHS]),
    '-DTFDCN_CUDA_MIN_DRIVER="%s"' % PORTABLE_MIN_DRIVER,
]

def dcn_cuda_object(src, hdrs):
    """Compiles src into the object `<basename>_cu` (a .pic.o for a cc_binary's srcs).

    Only built when something that is built depends on it (tags = ["manual"]): with
    ./configure.sh --cpu there is no CUDA toolchain.
    """
    name = src.split("/")[-1][:-len(".cu.cc")] + "_cu"
    if src.endswith("_sm90a.cu.cc"):
        cuda_object(
            name = name,
            src = src,
            hdrs = hdrs,
            copts = ["-x", "cu"] + _COMMON_COPTS + [
                "--expt-relaxed-constexpr",
                "-Xcompiler",
                "-fPIC",
                "-Xcompiler",
                "-fvisibility=hidden",
                "-gencode=arch=compute_90a,code=sm_90a",
            ],
            tags = ["manual"],
        )
    else:
        cuda_clang_object(
            name = name,
            src = src,
            hdrs = hdrs,
            copts = _COMMON_COPTS + ["-fvisibility=hidden"] + _PORTABLE_DEFINES,
            gpu_archs = PORTABLE_ARCHS,
            ptx_arch = PORTABLE_PTX_ARCH,
            ptx_isa = PORTABLE_PTX_ISA,
            tags = ["manual"],
        )
    return name
