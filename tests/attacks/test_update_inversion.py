"""Multi-step update inversion: recover an image from a 5-step local update (Geiping et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn

from fedlatent.attacks.metrics import ssim
from fedlatent.attacks.update_inversion import invert_update, simulate
from fedlatent.data.loading import load_dataset


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10))


def test_simulated_adam_steps_are_torchs_adam() -> None:
    model = _small_model()
    ds = load_dataset("digits")
    x, y = torch.from_numpy(ds.x_train[:4]), torch.from_numpy(ds.y_train[:4])
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    ours = simulate(model, start, x, y, local_steps=5, local_lr=0.01, create_graph=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name].detach(), p.detach(), rtol=1e-5, atol=1e-6)


def test_an_image_is_recovered_from_a_five_step_local_update() -> None:
    model = _small_model()
    ds = load_dataset("digits")
    x, y = torch.from_numpy(ds.x_train[3:4]), torch.from_numpy(ds.y_train[3:4])
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    upload = {
        k: v.detach() for k, v in simulate(model, start, x, y, local_steps=5, local_lr=0.5, optimizer="sgd").items()
    }
    recovered = invert_update(
        model, start, upload, input_shape=(1, 8, 8), labels=y, local_steps=5, local_lr=0.5, optimizer="sgd",
        steps=400, lr=0.1, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert float(ssim(recovered.numpy(), x.numpy())[0]) > 0.8
    assert float(ssim(ds.x_train[:1000].mean(0, keepdims=True), x.numpy())[0]) < 0.6  # the mean image is no match
