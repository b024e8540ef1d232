"""The REST API, wire-compatible with Astria's tunes / prompts / packs API, served beside the Gradio app."""
