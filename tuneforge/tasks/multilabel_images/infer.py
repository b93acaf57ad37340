"""Multi-label images at inference (`image-multilabel`): images decoded and resized as training
did into the image graph, one sigmoid probability per label out; each label is decided by its
validation-tuned threshold (config.json `thresholds`), as text multi-label bundles answer."""
from __future__ import annotations

from pathlib import Path

from ...core.data.images import decode_cached
from ...core.data.multilabel import read_multilabel_images
from ...errors import DataError
from ..image.infer import ImageClassification
from ..registry import Labelled, MultiLabelTask, register_task


@register_task("image-multilabel")
class ImageMultiLabel(MultiLabelTask, ImageClassification):
    """Several labels per image (registry.MultiLabelTask: the answers, thresholds and sigmoid graph)."""

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """A table's images from the column the model was trained on, unless --column names another."""
        trained = self.data.get("image_column")
        return super().table_rows(path, column or trained)

    def labelled(self, data: str | Path, strict: bool = False, cache_dir: str | None = None, **options) -> Labelled:
        """A table in the training layout: image paths and the '|'-separated label column, or the
        0/1 --label-columns; labels the model does not know are counted and left out."""
        d = self.data
        if not Path(data).is_file():
            raise DataError(f"{data}: a multi-label image model is evaluated on a table of image paths "
                            f"({d.get('image_column', 'path')!r}) and labels ({d.get('label_column', 'label')!r})")
        label_columns = [c.strip() for c in d["label_columns"].split(",")] if d.get("label_columns") else None
        table = read_multilabel_images(data, d.get("image_column") or "path", d.get("label_column", "label"), label_columns,
                                       d.get("encoding", "utf-8"), classes=self.classes, flag=None)
        arr, ok, bad = decode_cached(table.files, self.pre["image_size"], self.pre.get("resize", "crop"), cache_dir,
                                     strict=strict)
        paths = [str(f) for f, good in zip(table.files, ok) if good]
        return Labelled([{"image": a} for a in arr], table.labels.numpy()[ok],
                        {"test": len(paths), "file": str(data), "skipped": bad, "unknown_labels": table.unknown},
                        {"images": arr, "paths": paths}, Path(data).name)
