"""Tools around the model: benchmarks and deviceless compiles, parameter counts, the side
by side with PyTorch, export, the Hub, the demo, drawn street videos."""
