"""Small helpers shared by the training tests."""


def trainable_state(trainer) -> dict:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
