"""Baseline methods: linear probe, full fine-tuning and zero-shot CLIP (registered lazily by name)."""
