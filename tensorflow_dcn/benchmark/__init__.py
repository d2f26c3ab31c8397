"""DCNv2 benchmarks, side by side on one device.

Op/layer level, `python -m tensorflow_dcn.benchmark [--device gpu|cpu] [--quick] ...`: the
forward and forward+backward passes of
  - tfdcn / tfdcn_xla (`tfdcn.deform_conv2d`) and tfdcn_layer / tfdcn_layer_xla (`tfdcn.DCNv2`,
    with its offset conv), under tf.function without / with XLA;
  - pure_tf / pure_tf_xla: `tensorflow_dcn.reference.PureTFDCNv2`, the kind of pure-TF layer
    users have today, likewise;
  - baseline / baseline_xla: any Keras layer with weights kernel, bias, offset_kernel,
    offset_bias (`--baseline module:Class`), given the same weights, likewise;
  - torchvision: `torchvision.ops.deform_conv2d`, in a subprocess (`--torch-python`);
  - conv2d / conv2d_xla: `tf.nn.conv2d` of the same shape, the floor, likewise;
in float32 (TF32 off and on), float16 and bfloat16, with peak extra GPU memory and the error
against float64. Writes benchmark.md, benchmark.json and (with matplotlib) benchmark.png into
`--out` (default ./bench_out).

Model level, `python -m tensorflow_dcn.benchmark model [--quick] ...`: the training step
(`model.fit`, Keras' default compile) of a FaPN-style segmentation network
(segmentation_model.py) with Conv2D, PureTFDCNv2, tfdcn.DCNv2 or the --baseline layer aligning
its decoder features, in float32, mixed_bfloat16 and mixed_float16; the same three files in
`--out` (default ./bench_out/model).

`--help` lists the options; docs/benchmarks/README.md explains the method and the columns.
"""
