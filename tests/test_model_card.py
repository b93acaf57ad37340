"""The bundle's README (model card) describes the bundle's own kind of input: an image model's
usage line and ONNX input are pixels, a text model's are texts and the graph's own input names."""
from tuneforge.core.bundle import model_card


def _config(task: str, onnx_inputs: dict | None = None) -> dict:
    onnx = {"file": "model.onnx", "opset": 17, "max_abs_diff": 1e-6, "checked_on": 8}
    if onnx_inputs is not None:
        onnx["inputs"] = onnx_inputs
    return {"task": task, "model": "m", "classes": ["a", "b"], "created": "2026-11-29", "preprocessing": {},
            "metrics": {"test": {"accuracy": 0.9, "macro_f1": 0.9, "n": 10}}, "onnx": onnx}


def test_image_card_says_pixels():
    card = model_card(_config("image-classification"))
    assert "image.jpg" in card and "uint8 NCHW" in card


def test_text_card_says_texts_and_graph_inputs():
    card = model_card(_config("text-tfidf", {"term_ids": "int64", "tf": "float32"}))
    assert "image.jpg" not in card and "NCHW" not in card
    assert '--text "a text to classify"' in card
    assert "`term_ids` (int64)" in card and "`tf` (float32)" in card
