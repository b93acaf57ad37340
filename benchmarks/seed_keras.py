"""The design document's Keras pipeline (seed doc, section 5.2), reproduced as faithfully as the
current TensorFlow allows, for side-by-side benchmarks against tuneforge's PyTorch recipe.

    .venv-keras/bin/python benchmarks/seed_keras.py [--data ../shared/datasets/cifar10]
        [--epochs 10] [--limit-per-class N] [--out benchmarks/results/seed_keras.json]
        [--throughput-only | --no-throughput]

Runs in its own virtual environment (.venv-keras, pins in benchmarks/keras_requirements.txt),
never in the project's .venv. Thread counts are left at TensorFlow's defaults, as a user would.

Where this differs from the design's text (each is forced or is a bug in the design):
- the design reads a val/ folder that CIFAR-10 lacks: validation is carved from train/ the Keras
  way, ImageDataGenerator(validation_split=0.1) with subset="training"/"validation" (Keras takes
  the first 10% of each class's sorted files, so the split is stratified and fixed);
- as in the design, the validation subset goes through the same augmenting generator
  (shear/zoom/flip), so val accuracy is measured on augmented images;
- Adam(lr=0.001) is rejected by Keras 3 (ValueError): Adam(learning_rate=1e-3), same value;
- the design's train() passes (x, y) arrays; generators are passed to fit() instead;
- the design's "Test results" evaluate the val set again; here the test/ folder is evaluated
  once, with rescale only and shuffle=False.
"""
import time

_T_SCRIPT = time.perf_counter()  # before any heavy import: wall time as a user would feel it


def _process_age_s():
    """Seconds since this process started (Linux), so interpreter start-up counts too."""
    try:
        import os
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


_AGE_AT_SCRIPT = _process_age_s()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def wall_since_start():
    """Wall seconds since process start (falls back to since the script's first line)."""
    base = _AGE_AT_SCRIPT if _AGE_AT_SCRIPT is not None else 0.0
    return base + (time.perf_counter() - _T_SCRIPT)


def limited_copy(src: Path, n: int) -> Path:
    """A temp tree of symlinks to the first n files (sorted) of each class of src/{train,test}."""
    root = Path(tempfile.mkdtemp(prefix="seed-keras-data-"))
    for split in ("train", "test"):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            dst = root / split / cls.name
            dst.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                os.symlink(f.resolve(), dst / f.name)
    return root


def build_model(num_classes=10):
    """The design's ImageClassifier model and compile call, layer for layer."""
    from tensorflow.keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from tensorflow.keras.models import Sequential
    from tensorflow.keras.optimizers import Adam

    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(64, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(128, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(512, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(num_classes, activation="softmax"))
    # Design: Adam(lr=0.001); Keras 3 only accepts learning_rate=.
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def throughput(n=10240, batch_size=256, timed_epochs=2):
    """Training images/s of a fresh copy of the model on in-memory random float32 data."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    model = build_model()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up (tracing, allocation)
    rates = []
    for _ in range(timed_epochs):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        rates.append(n / (time.perf_counter() - t0))
    return {"throughput_img_s_bs256" if batch_size == 256 else f"throughput_img_s_bs{batch_size}":
            round(statistics.median(rates), 1),
            "throughput_epochs_img_s": [round(r, 1) for r in rates],
            "throughput_n": n, "throughput_batch_size": batch_size}


def train_and_test(data: Path, epochs: int):
    import tensorflow as tf
    from tensorflow.keras.callbacks import Callback, EarlyStopping
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    class PhaseTimer(Callback):
        """Per epoch: seconds spent on training batches, excluding the validation pass."""

        def __init__(self):
            super().__init__()
            self.train_s = []
            self._t = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._t is not None:  # validation at the end of an epoch
                self.train_s.append(time.perf_counter() - self._t)
                self._t = None

        def on_epoch_end(self, epoch, logs=None):
            if self._t is not None:  # epoch without validation
                self.train_s.append(time.perf_counter() - self._t)
                self._t = None

    data_gen = ImageDataGenerator(rescale=1. / 255, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                                  validation_split=0.1)
    train_data = data_gen.flow_from_directory(str(data / "train"), target_size=(32, 32), batch_size=32,
                                              class_mode="categorical", subset="training")
    # Faithful to the design: the validation data comes from the same (augmenting) generator.
    val_data = data_gen.flow_from_directory(str(data / "train"), target_size=(32, 32), batch_size=32,
                                            class_mode="categorical", subset="validation")
    test_gen = ImageDataGenerator(rescale=1. / 255)
    test_data = test_gen.flow_from_directory(str(data / "test"), target_size=(32, 32), batch_size=32,
                                             class_mode="categorical", shuffle=False)
    assert train_data.class_indices == test_data.class_indices, "class folders differ between train and test"

    model = build_model(num_classes=train_data.num_classes)
    timer = PhaseTimer()
    early_stopping = EarlyStopping(patience=3, restore_best_weights=True)
    t0 = time.perf_counter()
    hist = model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=[early_stopping, timer])
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_loss, test_acc = model.evaluate(test_data)
    eval_s = time.perf_counter() - t1

    h = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    epochs_run = len(h["loss"])
    best = min(range(epochs_run), key=lambda i: h["val_loss"][i])  # EarlyStopping monitors val_loss
    train_s = sum(timer.train_s)
    return {
        "test_accuracy": round(float(test_acc), 4),
        "test_loss": round(float(test_loss), 4),
        "val_accuracy_best": round(max(h["val_accuracy"]), 4),
        "val_accuracy_at_restored_epoch": round(h["val_accuracy"][best], 4),
        "restored_epoch": best + 1,
        "epochs_run": epochs_run,
        "epochs_max": epochs,
        "n_train": train_data.samples, "n_val": val_data.samples, "n_test": test_data.samples,
        "fit_s": round(fit_s, 2),
        "train_phase_s": round(train_s, 2),
        "eval_test_s": round(eval_s, 2),
        "train_img_s": round(train_data.samples * epochs_run / train_s, 1) if train_s else None,
        "train_img_s_incl_val": round(train_data.samples * epochs_run / fit_s, 1),
        "history": {k: [round(v, 4) for v in vs] for k, vs in h.items()},
        "tf_threading": {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                         "intra_op": tf.config.threading.get_intra_op_parallelism_threads()},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/datasets/cifar10", help="folder with train/ and test/")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit-per-class", type=int, default=None,
                    help="smoke tests: use only the first N files of each class (symlinked temp copy)")
    ap.add_argument("--out", default="benchmarks/results/seed_keras.json")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--throughput-only", action="store_true", help="skip training; only the bs-256 throughput")
    g.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement after training")
    ap.add_argument("--throughput-n", type=int, default=10240, help="random images per throughput epoch")
    args = ap.parse_args()

    loadavg_before = os.getloadavg()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    import keras
    import numpy as np
    import tensorflow as tf

    doc = {"benchmark": "seed_keras", "date": date, "argv": sys.argv[1:],
           "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "tf_threading": {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                            "note": "0 = TensorFlow's default (chosen from the cores available)"},
           "loadavg_before": list(loadavg_before)}

    tmp = None
    try:
        if not args.throughput_only:
            data = Path(args.data)
            if args.limit_per_class:
                tmp = limited_copy(data, args.limit_per_class)
                data = tmp
            doc["data"] = args.data
            doc["limit_per_class"] = args.limit_per_class
            res = train_and_test(data, args.epochs)
            doc["tf_threading"].update({"after_fit_" + k: v for k, v in res.pop("tf_threading").items()})
            doc.update(res)
            doc["wall_s_to_test_result"] = round(wall_since_start(), 2)
        if not args.no_throughput:
            t0 = time.perf_counter()
            doc.update(throughput(n=args.throughput_n))
            doc["throughput_s"] = round(time.perf_counter() - t0, 2)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    doc["wall_s"] = round(wall_since_start(), 2)  # whole process, imports and throughput included
    doc["loadavg_after"] = list(os.getloadavg())
    doc["deviations_from_design"] = [
        "validation = ImageDataGenerator(validation_split=0.1) subset of train/ (no val/ folder); "
        "it is augmented like train, as in the design",
        "Adam(learning_rate=1e-3) instead of Adam(lr=0.001), which Keras 3 rejects",
        "fit() gets generators, not (x, y) arrays; test/ evaluated once (design re-evaluates val)",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
