/// The default network, a copy of Graphs/simplecnn.graph (a test keeps the two identical).
let defaultGraph = """
# SimpleCNN: two conv blocks and a two-layer classifier (about 421k parameters)
graph simplecnn

input image: f32[N, 1, 28, 28]
input label: i32[N]

conv1  = conv2d(image, filters: 32, kernel: 3, padding: 1)
relu1  = relu(conv1)
pool1  = maxpool(relu1, size: 2)
conv2  = conv2d(pool1, filters: 64, kernel: 3, padding: 1)
relu2  = relu(conv2)
pool2  = maxpool(relu2, size: 2)
flat   = flatten(pool2)
fc1    = dense(flat, units: 128)
relu3  = relu(fc1)
drop   = dropout(relu3, rate: 0.5)
fc2    = dense(drop, units: 10)
loss   = cross_entropy(fc2, label)

output fc2
minimize loss
"""
