"""The lab: benchmarks, learning parity, upsampler costs, decoder ablations, shipping entries,
publishing folders and the model card."""
