"""The pieces every kind of task is built from: data readers and loaders, augmentation, models,
strategies, the engine and the run around it, metrics, bundle io and reports. Nothing here knows
a particular kind of task (tuneforge/tasks) or deployment (tuneforge/deploy)."""
