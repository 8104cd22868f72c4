"""LeNet-5 from scratch in NumPy (the seeds' forward and backward passes), proven equal to Keras.

`layers`: Conv2D, pooling, Dense, activations, softmax cross-entropy, forward and backward;
`network`: the deck's LeNet-5 from them, SGD with momentum + exponential decay, weight exchange
with `lenet_keras.models.LeNet5`; `train`: `make scratch`, a run directory like Keras runs.
"""
