"""The parts of scripts/photomaker_batch.py: ComfyUI's HTTP API (client), workflow binding
(workflow), people and prompts (inputs), the manifest (manifest), dispatch over servers (dispatch)
and the contact sheet (sheet). Standard library only, plus aiohttp for the websocket (a ComfyUI
dependency, so any Python that runs ComfyUI runs this)."""
