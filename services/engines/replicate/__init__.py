"""MusicGen on Replicate: the engine built on `services.replicate` (which knows no model) and the
webhooks that tell it a run's news."""
