"""The pipeline's stages, each a function over the state store: pull, map, diff, push, reconcile."""
