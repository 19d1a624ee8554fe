"""The PAC model, observation tokenizer, offline training and ONNX export (see DESIGN §3, §6)."""
