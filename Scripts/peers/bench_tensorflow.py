"""SimpleCNN in TensorFlow/Keras under the shared protocol (NHWC; C = 1, so the input is a reshape); with PRECISION=bf16
under Keras's mixed_bfloat16 policy (the logits layer in float32)."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import onednn_isa, run  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
tf.keras.utils.set_random_seed(1)
BF16 = os.environ.get("PRECISION") == "bf16"
if BF16:
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
init = lambda fan_in: tf.keras.initializers.RandomUniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in))  # PyTorch's default
model = tf.keras.Sequential([
    tf.keras.layers.Input((28, 28, 1)),
    tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(9), bias_initializer=init(9)),
    tf.keras.layers.MaxPool2D(2),
    tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init(288), bias_initializer=init(288)),
    tf.keras.layers.MaxPool2D(2),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(128, activation="relu", kernel_initializer=init(3136), bias_initializer=init(3136)),
    tf.keras.layers.Dropout(0.5),
    tf.keras.layers.Dense(10, kernel_initializer=init(128), bias_initializer=init(128), dtype="float32"),
])
opt = tf.keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@tf.function
def step(x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


@tf.function
def infer(x):
    return model(x, training=False)


run("tensorflow " + tf.__version__ + (" mixed_bfloat16" if BF16 else ""),
    lambda x, y: step(tf.constant(x.reshape(-1, 28, 28, 1)), tf.constant(y)),
    lambda x: infer(tf.constant(x.reshape(-1, 28, 28, 1))).numpy(),
    epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 2,
    extra={"onednn_isa": onednn_isa("import tensorflow as tf; tf.nn.conv2d(tf.zeros([1, 8, 8, 4]), tf.zeros([3, 3, 4, 8]), 1, 'SAME')")})
