"""Stand-in for comfy.model_patcher.ModelPatcher (constructor and the attributes ComfyUI sets)."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        elif self.model.device is None:
            self.model.device = offload_device
        self.model.model_loaded_weight_memory = 0

    def model_size(self):
        return self.size
