"""DCNv2 benchmark: `python -m tensorflow_dcn.benchmark [--device gpu|cpu] [--quick] ...`.

Times, side by side on one device, the forward and forward+backward passes of
  - tfdcn (`tfdcn.deform_conv2d`) and tfdcn_layer (`tfdcn.DCNv2`, with its offset conv);
  - pure_tf / pure_tf_xla: `tensorflow_dcn.reference.PureTFDCNv2`, the kind of pure-TF layer
    users have today, under tf.function without / with XLA;
  - baseline: any Keras layer with weights kernel, bias, offset_kernel, offset_bias
    (`--baseline module:Class`), given the same weights;
  - torchvision: `torchvision.ops.deform_conv2d`, in a subprocess (`--torch-python`);
  - conv2d: `tf.nn.conv2d` of the same shape, the floor;
in float32 (TF32 off and on), float16 and bfloat16, with peak extra GPU memory and the error
against float64. Writes benchmark.md, benchmark.json and (with matplotlib) benchmark.png into
`--out` (default ./bench_out). `--help` lists the options; docs/benchmarks/README.md explains the
method and the columns.
"""
