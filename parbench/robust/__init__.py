"""The robustness track: a finished run's model on its own test split under common corruptions and adversarial
attacks (`parbench robust`). `corruptions` defines the perturbations of images, `attacks` those of model
inputs, `evaluate` scores a run under them and stores one derived record per perturbation."""
