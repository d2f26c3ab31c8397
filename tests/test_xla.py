"""The ops have no XLA kernels: XLA compilation around them fails early with a message that names
the op and the way out; nothing changes without XLA."""

import keras
import tensorflow as tf

import tensorflow_dcn as tfdcn


class XlaTest(tf.test.TestCase):
    """The ops have no XLA kernels: jit_compile=True must fail at trace time, naming the op and
    the way out; nothing changes without XLA."""

    def test_jit_compile_names_the_op_and_the_way_out(self):
        x, offset, kernel = tf.zeros([1, 5, 5, 2]), tf.zeros([1, 5, 5, 18]), tf.zeros([3, 3, 2, 4])

        def forward(x):
            return tfdcn.deform_conv2d(x, offset, kernel, padding="same")

        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"DCNv2Forward \(tensorflow_dcn\) has no XLA kernel.*"
                                    r"without jit_compile.*PureTFDCNv2"):
            tf.function(forward, jit_compile=True)(x)
        inner = tf.function(forward)  # a plain function called from an XLA-compiled one
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "DCNv2Forward"):
            tf.function(lambda x: inner(x), jit_compile=True)(x)
        self.assertEqual(tf.function(forward)(x).shape, (1, 5, 5, 4))
        self.assertEqual(forward(x).shape, (1, 5, 5, 4))

    def test_model_in_jit_compiled_step(self):
        inputs = keras.Input((5, 5, 2))
        model = keras.Model(inputs, tfdcn.DCNv2(3, 3, padding="same")(inputs))

        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x))
            return tape.gradient(loss, model.trainable_variables)

        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "DCNv2Forward"):
            tf.function(step, jit_compile=True)(tf.ones([1, 5, 5, 2]))
        self.assertLen(tf.function(step)(tf.ones([1, 5, 5, 2])), 4)


if __name__ == "__main__":
    tf.test.main()
