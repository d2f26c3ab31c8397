"""Rules that compile one .cu.cc into a PIC object file with device code for a list of GPUs.

cuda_object        nvcc (CUDA 13, @local_config_cuda's NVCC): for kernels that need the newest
                   PTX (sm_90a: wgmma, setmaxnreg). Its cubins need a driver >= 580.
cuda_clang_object  clang (Debian's clang-16) against CUDA 12.9 headers, ptxas and libdevice from
                   PyPI wheels (third_party/cuda/cuda_configure.bzl): cubins that load on every
                   driver >= 525, sm_70 included. clang-16's own fatbinary step speaks the old
                   `fatbinary --image=` syntax, so the object is made in three steps:
                     1. per GPU: clang --cuda-device-only -S -> PTX (ISA 7.8), ptxas -> cubin;
                        for the GPUs in ptx_isa the PTX's .version line is raised first (below)
                     2. fatbinary --image3 (nvcc 13's: it only packs) -> one fatbin
                     3. clang --cuda-host-only -fcuda-include-gpubinary: the host object that
                        embeds the fatbin and registers its kernels when the library loads
                   The host object needs only __cudaRegisterFatBinary(End), __cudaRegisterFunction,
                   __cudaPush/PopCallConfiguration and cudaLaunchKernel, which
                   libtensorflow_framework.so.2 exports.
"""

load("@local_config_cuda//:defs.bzl", "CLANG", "FATBINARY", "NVCC")

def _include_args(args, ccs):
    for c in ccs:
        args.add_all(c.defines, format_each = "-D%s")
        args.add_all(c.quote_includes, before_each = "-I")  # nvcc has no -iquote
        args.add_all(c.includes, before_each = "-I")
        args.add_all(c.system_includes, before_each = "-isystem")

def _nvcc_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".pic.o")
    ccs = [d[CcInfo].compilation_context for d in ctx.attr.deps]
    args = ctx.actions.args()
    args.add_all(ctx.attr.copts)
    _include_args(args, ccs)
    args.add_all(["-c", ctx.file.src, "-o", out])
    ctx.actions.run(
        executable = NVCC,
        arguments = [args],
        inputs = depset([ctx.file.src] + ctx.files.hdrs, transitive = [c.headers for c in ccs]),
        outputs = [out],
        use_default_shell_env = True,  # PATH (for gcc) and the --action_env values
        mnemonic = "NvccCompile",
        progress_message = "nvcc %s" % ctx.file.src.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

cuda_object = rule(
    implementation = _nvcc_impl,
    attrs = {
        "src": attr.label(allow_single_file = [".cu.cc", ".cu"]),
        "hdrs": attr.label_list(allow_files = True),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
    },
)

# nvcc inlines every device function it can; clang's default inliner leaves big ones (a kernel's
# lambdas, mma::WarpMma) as calls, and the register arrays they take by reference (accumulators,
# fragments) then live on the stack: 640-990 bytes of local memory per thread in the fused kernels.
# With this threshold they inline as under nvcc: no stack frame in the fused and GEMM kernels.
_CLANG_DEVICE_FLAGS = ["-mllvm", "-inline-threshold=1000"]

def _clang(ctx, arguments, inputs, output, what):
    ctx.actions.run(
        executable = CLANG,
        arguments = arguments,
        inputs = inputs,
        outputs = [output],
        use_default_shell_env = True,  # PATH and the --action_env values
        mnemonic = "ClangCuda",
        progress_message = "clang %s %s" % (what, ctx.file.src.short_path),
    )

# clang-16 writes PTX ISA 7.8 at most; instructions of a later ISA (sm_90's vector atomics, 8.1)
# reach the PTX through inline asm that the source enables when TFDCN_PTX_ISA says the version
# line will be raised, which this does. ptxas 12.9 reads up to ISA 8.8.
def _raise_ptx_isa(ctx, src_ptx, out_ptx, isa):
    ctx.actions.run_shell(
        command = "grep -qx '.version 7.8' \"$1\" && sed 's/^\\.version 7\\.8$/.version %s/' \"$1\" > \"$2\"" % isa,
        arguments = [src_ptx.path, out_ptx.path],
        inputs = [src_ptx],
        outputs = [out_ptx],
        mnemonic = "PtxIsa",
        progress_message = "PTX ISA %s %s" % (isa, ctx.file.src.short_path),
    )

def _clang_impl(ctx):
    src = ctx.file.src
    name = ctx.label.name
    toolkit = ctx.files._cuda12
    ptxas = [f for f in toolkit if f.path.endswith("/bin/ptxas")][0]
    cuda_path = ptxas.dirname[:-len("/bin")]
    inputs = depset([src] + ctx.files.hdrs + toolkit)
    common = [
        "-x",
        "cuda",
        "--cuda-path=" + cuda_path,
        # clang-16 knows CUDA up to 11.8; 12.9's headers work with it.
        "-Wno-unknown-cuda-version",
        # CCCL 12.9 declares variadic device functions (never called by us).
        "-Xclang",
        "-fcuda-allow-variadic-functions",
    ] + ctx.attr.copts

    # 1. Per GPU: PTX, then the cubin; the PTX of ptx_arch also goes into the fatbin (JIT-compiled
    # by the driver on GPUs newer than every cubin).
    images, image_files = [], []
    for arch in ctx.attr.gpu_archs:
        ptx = ctx.actions.declare_file("%s_sm_%s.ptx" % (name, arch))
        isa = ctx.attr.ptx_isa.get(arch)
        clang_ptx = ctx.actions.declare_file("%s_sm_%s.isa78.ptx" % (name, arch)) if isa else ptx
        _clang(ctx, common + _CLANG_DEVICE_FLAGS + [
            "--cuda-device-only",
            "--cuda-gpu-arch=sm_" + arch,
            "-S",
            src.path,
            "-o",
            clang_ptx.path,
        ] + (["-DTFDCN_PTX_ISA=" + isa.replace(".", "")] if isa else []), inputs, clang_ptx, "sm_" + arch)
        if isa:
            _raise_ptx_isa(ctx, clang_ptx, ptx, isa)
        cubin = ctx.actions.declare_file("%s_sm_%s.cubin" % (name, arch))
        ctx.actions.run(
            executable = ptxas,
            arguments = ["-m64", "-O3", "--gpu-name", "sm_" + arch, "--output-file", cubin.path, ptx.path],
            inputs = [ptx],
            outputs = [cubin],
            mnemonic = "Ptxas",
            progress_message = "ptxas sm_%s %s" % (arch, src.short_path),
        )
        images.append("--image3=kind=elf,sm=%s,file=%s" % (arch, cubin.path))
        image_files.append(cubin)
        if arch == ctx.attr.ptx_arch:
            images.append("--image3=kind=ptx,sm=%s,file=%s" % (arch, ptx.path))
            image_files.append(ptx)
    if ctx.attr.ptx_arch and ctx.attr.ptx_arch not in ctx.attr.gpu_archs:
        fail("ptx_arch %s must be one of gpu_archs" % ctx.attr.ptx_arch)

    # 2. One fatbin. Uncompressed: compressed PTX in nvcc 13's default mode may need a new driver.
    fatbin = ctx.actions.declare_file(name + ".fatbin")
    ctx.actions.run(
        executable = FATBINARY,
        arguments = ["--create=" + fatbin.path, "-64", "--compress=false"] + images,
        inputs = image_files,
        outputs = [fatbin],
        mnemonic = "Fatbinary",
        progress_message = "fatbinary %s" % src.short_path,
    )

    # 3. The host object, embedding the fatbin.
    out = ctx.actions.declare_file(name + ".pic.o")
    _clang(ctx, common + [
        "--cuda-host-only",
        "--cuda-gpu-arch=sm_" + ctx.attr.gpu_archs[0],
        "-fPIC",
        "-Xclang",
        "-fcuda-include-gpubinary",
        "-Xclang",
        fatbin.path,
        "-c",
        src.path,
        "-o",
        out.path,
    ], depset([fatbin], transitive = [inputs]), out, "host")
    return [DefaultInfo(files = depset([out]))]

cuda_clang_object = rule(
    implementation = _clang_impl,
    attrs = {
        "src": attr.label(allow_single_file = [".cu.cc", ".cu"]),
        "hdrs": attr.label_list(allow_files = True),
        "copts": attr.string_list(),
        "gpu_archs": attr.string_list(mandatory = True),
        "ptx_arch": attr.string(),
        # GPU -> the PTX ISA its PTX is raised to ("8.1"); the source sees -DTFDCN_PTX_ISA=81.
        "ptx_isa": attr.string_dict(),
        "_cuda12": attr.label(default = "@local_config_cuda//:cuda12"),
    },
)
