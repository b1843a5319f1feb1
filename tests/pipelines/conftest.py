from __future__ import annotations

import pytest


@pytest.fixture
def spy():
    """``spy(unet)`` records what the UNet is conditioned on; hooks are removed after the test."""
    spies = []

    def make(unet):
        spies.append(UNetSpy(unet))
        return spies[-1]

    yield make
    for s in spies:
        s.remove()


class UNetSpy:
    """Records what the UNet is conditioned on, call by call."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        hidden = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        added = kwargs.get("added_cond_kwargs") or {}
        self.calls.append({"hidden": hidden.clone(), "text_embeds": added.get("text_embeds")})

    def remove(self):
        self.handle.remove()
