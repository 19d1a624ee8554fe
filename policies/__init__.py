"""The PAC model, observation tokenizer, offline datasets, training and ONNX export (see DESIGN §3, §6)."""
