"""The thing being tuned: captcha data, the CNN, its loss and LR schedule, and one training run."""
