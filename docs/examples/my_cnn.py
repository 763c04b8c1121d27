"""A first CNN as a tutorial writes it, at PyTorch's default init: probe it with

    probe run --model docs.examples.my_cnn:build --input-shape 3,32,32

(your own file works the same way: `--model mynet:build` from the folder that holds mynet.py).
"""

from torch import nn


def build(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def build_normal(num_classes: int = 10) -> nn.Module:
    """The same CNN with every weight matrix drawn N(0, 1) in its own code, as a newcomer might
    "initialize" it: probe it with `probe advise docs/examples/my_cnn_normal.yaml --apply`."""
    model = build(num_classes)
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.normal_(p)
    return model
