"""Trained weights and their formats: entries, downloads, the run-folder and published-folder
formats, the Hugging Face Hub, and `zoo.load`."""
