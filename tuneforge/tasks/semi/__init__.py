"""The semi-supervised pieces image and text fits share (setup.py): unlabeled pool, views, SemiModel,
strategy and loader for `fit --unlabeled ... --semi METHOD`."""
