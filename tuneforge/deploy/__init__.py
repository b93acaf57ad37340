"""From a bundle to predictions: the Predictor (eager PyTorch or ONNX Runtime), export (ONNX,
int8), batch prediction and the HTTP server. Imports only core bundle io and the inference side
of the task registry: nothing from training."""
