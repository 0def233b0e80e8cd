"""Using a trained model: prediction on images, scoring against a dataset, export to ONNX and
`torch.export`, ONNX Runtime deployment and int8 quantization."""
