"""ComfyUI integration layer of comfyui-vgt: model folders, model management, socket types, progress and previews.

Imported only inside ComfyUI (or the tests' stand-ins of its modules); ``vgt_impl`` stays ComfyUI-free.
"""
