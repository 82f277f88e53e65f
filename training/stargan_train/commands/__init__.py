"""The training stage's `stargan-rt` verbs. They are registered as entry points of the group
``stargan_rt.commands`` (pyproject.toml), which the CLI discovers, so that the deployable package
never imports the training package."""
