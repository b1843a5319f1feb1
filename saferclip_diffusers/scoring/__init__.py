"""Image scorers for the safety evaluation: NudeNet (nudity detector) and Q16 (inappropriateness head on CLIP)."""
