"""Importing the core is cheap: no model, no torch, no diffusers until something is actually run."""

from __future__ import annotations

import subprocess
import sys


def test_importing_every_core_module_loads_no_model_library():
    code = (
        "import sys\n"
        "import pipelines.settings, pipelines.errors, pipelines.registry, pipelines.tiny, pipelines.device\n"
        "import pipelines.faces, pipelines.photos, pipelines.prompts, pipelines.train, pipelines.generate\n"
        "import pipelines.tuning, pipelines.prompt_spec\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'peft', 'cv2', 'gradio')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported at import time: {result.stdout.strip()}"
