"""Stand-in for ComfyUI's folder_paths (same names and behaviour for what the pack uses)."""

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = os.environ.get("VGT_TEST_COMFY_BASE", "/nonexistent-comfy")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict = {}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    if folder_name in folder_names_and_paths:
        paths, _exts = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[folder_name]
    out = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for f in files:
                if os.path.splitext(f)[1].lower() in exts or not exts:
                    out.add(os.path.relpath(os.path.join(dirpath, f), root).replace("\\", "/"))
    return sorted(out)


def get_full_path(folder_name, filename):
    for root in get_folder_paths(folder_name):
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_input_directory():
    return os.path.join(base_path, "input")


def get_output_directory():
    return os.path.join(base_path, "output")
