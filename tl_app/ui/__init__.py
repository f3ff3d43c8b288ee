"""The Gradio front: one module per tab; only wiring, the work is in the core."""
