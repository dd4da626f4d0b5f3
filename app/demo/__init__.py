"""The embedded demo (issue 8): a procedural video world with ground truth; models trained on it come later."""
