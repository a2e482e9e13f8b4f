"""The seed paper's model 1: a 3-layer CNN on 64x64 grayscale, trained in PyTorch (BCE + Adam)
and exported to ONNX. Needs the `train` extra; serving reads only the ONNX file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.scoring.cnn import INPUT_SIDE


def build_model():
    import torch
    from torch import nn

    class PaperCNN(nn.Module):
        """Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool-Flatten-Dense(128)-Dense(1)-Sigmoid."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(128 * 8 * 8, 128),
                nn.ReLU(),
                nn.Linear(128, 1),
                nn.Sigmoid(),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return PaperCNN()


def train_cnn(
    used: np.ndarray,
    unused: np.ndarray,
    out: Path,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Train on (n, 64, 64) float32 arrays in [0, 1]; write ONNX to ``out``; return metrics."""
    import torch

    torch.manual_seed(seed)
    x = np.concatenate([used, unused])[:, None].astype(np.float32)
    y = np.concatenate([np.ones(len(used)), np.zeros(len(unused))]).astype(np.float32)[:, None]
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCELoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for lo in range(0, len(xt), batch_size):
            idx = order[lo : lo + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        loss_value = total / len(xt)
        log(f"cnn epoch {epoch + 1}/{epochs}: loss {loss_value:.4f}")
    model.eval()
    with torch.no_grad():
        train_acc = float(((model(xt) >= 0.5).float() == yt).float().mean())
    export_onnx(model, out)
    return {"train_loss": loss_value, "train_accuracy": train_acc, "epochs": epochs}


def export_onnx(model, out: Path) -> None:
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, INPUT_SIDE, INPUT_SIDE)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["image"],
        output_names=["p_used"],
        dynamic_axes={"image": {0: "batch"}, "p_used": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
