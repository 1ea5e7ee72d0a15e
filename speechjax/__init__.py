"""speechjax: train, evaluate and deploy speech-command classifiers with JAX and Flax."""
