"""Data: audio reading, the synthetic corpus, training lists, augmentation and the training dataset."""
