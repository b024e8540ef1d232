"""Everything that touches images and tensors; no gradio here, and nothing heavy happens at import.

settings   one `Settings` object read from the environment
errors     the error hierarchy (`TunesError` and friends)
registry   branches (sd15, sdxl1, flux1, tiny, fast), where their weights come from, how they load
tiny       tiny SD-1.5/SDXL-shaped models built from configs (CPU demo and test fixtures)
device     device and precision choice
faces      Haar-cascade face detection
photos     photo loading, refusal, quality report, training crops
prompts    prompt templates: token, class, characteristics
train      DreamBooth LoRA training with resumable checkpoints
generate   generation with cached base pipelines and LoRA adapters
tuning     photos -> checked photos -> trained LoRA, composed
"""
