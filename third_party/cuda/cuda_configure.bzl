"""@local_config_cuda: the two CUDA toolchains, or nothing when TF_NEED_CUDA=0.

- Portable kernels: clang (CUDA_CLANG_PATH, Debian's clang++-16) against the CUDA 12.9 directory
  that scripts/setup_env.sh assembles from pinned PyPI wheels (CUDA12_PATH): headers, ptxas,
  libdevice. Its cubins load on every driver >= 525.
- sm_90a kernels: nvcc from CUDA_TOOLKIT_PATH (CUDA 13, driver >= 580). Its `fatbinary` also packs
  the portable cubins.

Host code (the op library's .cc files) sees the CUDA 12.9 headers, the API of the CUDA runtime
TensorFlow 2.21 loads. No CUDA library is linked into the op library: it binds to the CUDA runtime
that libtensorflow_framework.so.2 exports, so the process holds a single CUDA runtime. Only the
TF-free test harness (tests/cuda_core) links the static CUDA 12.9 runtime (:cudart_static).
"""

_VARS = ["TF_NEED_CUDA", "CUDA_TOOLKIT_PATH", "CUDA12_PATH", "CUDA_CLANG_PATH"]

def _impl(ctx):
    env = ctx.os.environ
    need = env.get("TF_NEED_CUDA", "0") == "1"
    cuda = env.get("CUDA_TOOLKIT_PATH", "/usr/local/cuda")
    clang = env.get("CUDA_CLANG_PATH", "")
    build = 'package(default_visibility = ["//visibility:public"])\n'
    if need:
        cuda12 = env.get("CUDA12_PATH", "")
        if not cuda12 or not ctx.path(cuda12 + "/bin/ptxas").exists:
            fail("CUDA12_PATH (%s) is not a CUDA 12.9 directory: run scripts/setup_env.sh " % cuda12 +
                 "(make setup), or ./configure.sh --cpu")
        if not clang or not ctx.path(clang).exists:
            fail("CUDA_CLANG_PATH (%s) is not a clang: run scripts/setup_env.sh (make setup)" % clang)
        ctx.symlink(cuda12, "cuda12")
        build += """
# What clang reads through --cuda-path (inputs of every portable CUDA compile).
filegroup(
    name = "cuda12",
    srcs = glob(["cuda12/include/**", "cuda12/nvvm/**"]) + ["cuda12/bin/ptxas", "cuda12/wheels.txt"],
)

cc_library(name = "cuda_headers", hdrs = glob(["cuda12/include/**"]), includes = ["cuda12/include"])

# The static CUDA 12.9 runtime, hidden inside the library that links it.
cc_import(name = "cudart_static_a", static_library = "cuda12/lib64/libcudart_static.a", alwayslink = 1)

cc_library(
    name = "cudart_static",
    linkopts = ["-Wl,--exclude-libs,libcudart_static.a", "-ldl", "-lrt", "-lpthread"],
    deps = [":cudart_static_a"],
)
"""
    ctx.file("BUILD", build)
    ctx.file("defs.bzl", """CUDA_ENABLED = %s
NVCC = "%s/bin/nvcc"
FATBINARY = "%s/bin/fatbinary"
CLANG = "%s"

def if_cuda(if_true, if_false = []):
    return if_true if CUDA_ENABLED else if_false
""" % (need, cuda, cuda, clang))

cuda_configure = repository_rule(
    implementation = _impl,
    environ = _VARS,
    local = True,
)
