"""lenet-keras: reproducible LeNet-5 (MNIST) and CIFAR-10 CNN experiments in Keras/TensorFlow.

The flow is one-way: an experiment file (`config`) -> data + model + optimizer (`data`,
`models`, `optim`) -> training (`train.run`) -> a run directory -> a report (`report`).
"""

__version__ = "0.1.0"
