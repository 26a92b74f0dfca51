"""Long-tailed datasets in their real formats, literature splits, samplers, augmentation and the input pipeline."""
