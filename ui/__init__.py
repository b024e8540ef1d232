"""Gradio tabs. Each module builds one tab from callbacks that turn widget values into one core call."""
