"""The embedded demo (issue 8): a procedural video world with ground truth, the pipeline that trains the demo
models on it with the project's own recipes, their evaluation, and `fluxvid demo`, which serves the app on them."""
