"""The training stack on PyTorch: data (digits, MNIST), models (torch nn.Modules), losses,
the torch.func linearization and curvature, the optimizers (NGD family and TNGD on a Device as
torch.optim.Optimizer subclasses; SGD and Adam from torch.optim), the loop, runs and specs."""
