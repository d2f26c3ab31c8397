"""cuda_object: compiles one .cu.cc with nvcc into a PIC object file (flags from the deps' CcInfo)."""

load("@local_config_cuda//:defs.bzl", "NVCC")

def _impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".pic.o")
    ccs = [d[CcInfo].compilation_context for d in ctx.attr.deps]
    args = ctx.actions.args()
    args.add_all(ctx.attr.copts)
    for c in ccs:
        args.add_all(c.defines, format_each = "-D%s")
        args.add_all(c.quote_includes, before_each = "-I")  # nvcc has no -iquote
        args.add_all(c.includes, before_each = "-I")
        args.add_all(c.system_includes, before_each = "-isystem")
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
    implementation = _impl,
    attrs = {
        "src": attr.label(allow_single_file = [".cu.cc", ".cu"]),
        "hdrs": attr.label_list(allow_files = True),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
    },
)
