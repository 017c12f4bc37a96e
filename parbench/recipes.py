"""Training recipes that several methods share, named once (TrainConfig overrides; a method's own `recipe`)."""

# PromptPAR's (Event-AHU/OpenPAR train.py): SGD momentum 0.9, fusion/head lr 8e-3 with 5 warm-up epochs (the
# prompt group's lr and warm-up are the method's own options), weight decay 1e-4, cosine to 0.002 lr over 100
# epochs, gradient clipping at 10 per group, batch 16, pad 10 + random crop + flip. VPT-deep uses it too, so
# the comparison isolates what PromptPAR's text, regions and fusion block add.
PROMPT_TUNING = {
    "optimizer": "sgd", "lr": 8e-3, "weight_decay": 1e-4, "momentum": 0.9, "epochs": 100, "warmup_epochs": 5,
    "warmup_lr_init": 0.01, "min_lr": 0.002, "clip_grad": 10.0, "batch_size": 16, "pad": 10, "flip": True,
}  # fmt: skip

# Updating the image tower (full fine-tuning, LoRA): AdamW with decoupled weight decay, one warm-up epoch.
TOWER_TUNING = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "epochs": 10, "warmup_epochs": 1,
                "batch_size": 32}  # fmt: skip
