"""@local_config_cuda: the nvcc path and the CUDA headers, or nothing when TF_NEED_CUDA=0.

No CUDA library is linked: the op binds to the CUDA runtime that libtensorflow_framework.so.2
exports (the one TensorFlow itself loads), so the process holds a single CUDA runtime."""

def _impl(ctx):
    need = ctx.os.environ.get("TF_NEED_CUDA", "0") == "1"
    cuda = ctx.os.environ.get("CUDA_TOOLKIT_PATH", "/usr/local/cuda")
    build = 'package(default_visibility = ["//visibility:public"])\n'
    if need:
        ctx.symlink(cuda + "/include", "include")
        build += 'cc_library(name = "cuda_headers", hdrs = glob(["include/**"]), includes = ["include"])\n'
    ctx.file("BUILD", build)
    ctx.file("defs.bzl", """CUDA_ENABLED = %s
NVCC = "%s/bin/nvcc"
def if_cuda(if_true, if_false = []):
    return if_true if CUDA_ENABLED else if_false
""" % (need, cuda))

cuda_configure = repository_rule(
    implementation = _impl,
    environ = ["TF_NEED_CUDA", "CUDA_TOOLKIT_PATH"],
    local = True,
)
