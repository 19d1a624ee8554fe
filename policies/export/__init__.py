"""Export a PAC model to the ONNX file contract of DESIGN §3 (`pac-export`)."""
