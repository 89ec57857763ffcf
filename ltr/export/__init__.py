"""ONNX export of trained rankers, with a parity gate and latency figures."""
