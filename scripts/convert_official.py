#!/usr/bin/env python3
"""Convert an official StyleGAN2 network pickle to official-named state dicts that `sg2 import` reads.

    python3 scripts/convert_official.py SRC.pkl OUT_PREFIX
      -> OUT_PREFIX-G.safetensors  (the EMA generator, Gs)
         OUT_PREFIX-D.safetensors  (the discriminator)
         OUT_PREFIX-kwargs.json    ({"G": {...}, "D": {...}} in stylegan2-ada-pytorch's constructor form)

Accepts NVlabs/stylegan2 TensorFlow pickles (no TensorFlow needed: the pickled network states are read with stub
classes and the variables renamed with the transposes, flips and offsets of stylegan2-ada-pytorch's legacy.py) and
stylegan2-ada-pytorch pickles (needs torch; the modules' state is read without the official source code).
Then: sg2 import --g OUT_PREFIX-G.safetensors --d OUT_PREFIX-D.safetensors --kwargs OUT_PREFIX-kwargs.json --out net.safetensors
"""

import json
import os
import pickle
import re
import sys

import numpy as np


class _TFNetwork:
    """Stands in for dnnlib.tflib.network.Network: keeps the pickled state."""

    def __setstate__(self, state):
        self.static_kwargs = dict(state.get("static_kwargs", {}))
        self.components = dict(state.get("components", {}))
        self.variables = list(state.get("variables", []))
        self.name = state.get("name")


class _Persistent:
    """Stands in for a stylegan2-ada-pytorch persistent module: keeps its init kwargs and module state."""

    def __init__(self, meta):
        self.state = meta.get("state", {}) or {}
        # persistence.py keeps the constructor arguments on the instance.
        self.init_kwargs = self.state.get("_init_kwargs", {}) or {}


def _reconstruct_persistent_obj(meta):
    return _Persistent(meta)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("dnnlib.tflib.network") and name == "Network":
            return _TFNetwork
        if module.startswith("torch_utils.persistence") and name == "_reconstruct_persistent_obj":
            return _reconstruct_persistent_obj
        if module.startswith("dnnlib") and name == "EasyDict":
            return dict
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core", 1) if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _tf_params(net):
    params = {}

    def recurse(prefix, n):
        for name, value in n.variables:
            params[prefix + name] = np.asarray(value)
        for name, comp in n.components.items():
            recurse(prefix + name + "/", comp)

    recurse("", net)
    return params


def _filter(kernel):
    k = np.asarray(kernel, dtype=np.float32)
    f = np.outer(k, k)
    return (f / f.sum()).astype(np.float32)


def _kw(kwargs, used, name, default):
    used.add(name)
    v = kwargs.get(name, default)
    return default if v is None and default is not None else v


def convert_tf_generator(tf_g):
    kw, used = tf_g.static_kwargs, set()
    res = _kw(kw, used, "resolution", 1024)
    kernel = _kw(kw, used, "resample_kernel", [1, 3, 3, 1])
    kwargs = {
        "z_dim": _kw(kw, used, "latent_size", 512),
        "c_dim": _kw(kw, used, "label_size", 0),
        "w_dim": _kw(kw, used, "dlatent_size", 512),
        "img_resolution": res,
        "img_channels": _kw(kw, used, "num_channels", 3),
        "mapping_kwargs": {
            "num_layers": _kw(kw, used, "mapping_layers", 8),
            "lr_multiplier": _kw(kw, used, "mapping_lrmul", 0.01),
        },
        "synthesis_kwargs": {
            "channel_base": _kw(kw, used, "fmap_base", 16384) * 2,
            "channel_max": _kw(kw, used, "fmap_max", 512),
            "num_fp16_res": _kw(kw, used, "num_fp16_res", 0),
            "conv_clamp": _kw(kw, used, "conv_clamp", None),
            "architecture": _kw(kw, used, "architecture", "skip"),
            "resample_filter": kernel,
        },
    }
    p = _tf_params(tf_g)
    for name, value in list(p.items()):
        m = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if m:
            r = res // (2 ** int(m.group(1)))
            p[f"synthesis/{r}x{r}/ToRGB/{m.group(2)}"] = value
            kwargs["synthesis_kwargs"]["architecture"] = "orig"
    out = {"mapping.w_avg": p["dlatent_avg"]}
    if "mapping/LabelEmbed/weight" in p:
        out["mapping.embed.weight"] = p["mapping/LabelEmbed/weight"].T
        out["mapping.embed.bias"] = p["mapping/LabelEmbed/bias"]
    for i in range(kwargs["mapping_kwargs"]["num_layers"]):
        out[f"mapping.fc{i}.weight"] = p[f"mapping/Dense{i}/weight"].T
        out[f"mapping.fc{i}.bias"] = p[f"mapping/Dense{i}/bias"]
    f = _filter(kernel)
    log2 = int(np.log2(res))
    arch = kwargs["synthesis_kwargs"]["architecture"]

    def layer(dst, src, noise_idx, flip):
        w = p[f"{src}/weight"]
        if flip:
            w = w[::-1, ::-1]
        out[f"{dst}.weight"] = w.transpose(3, 2, 0, 1)
        out[f"{dst}.bias"] = p[f"{src}/bias"]
        out[f"{dst}.noise_strength"] = np.asarray(p[f"{src}/noise_strength"]).reshape([])
        out[f"{dst}.noise_const"] = p[f"synthesis/noise{noise_idx}"][0, 0]
        out[f"{dst}.affine.weight"] = p[f"{src}/mod_weight"].T
        out[f"{dst}.affine.bias"] = p[f"{src}/mod_bias"] + 1
        out[f"{dst}.resample_filter"] = f

    for rl in range(2, log2 + 1):
        r = 2**rl
        b, s = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        if r == 4:
            out[f"{b}.const"] = p[f"{s}/Const/const"][0]
            layer(f"{b}.conv1", f"{s}/Conv", 0, False)
        else:
            layer(f"{b}.conv0", f"{s}/Conv0_up", rl * 2 - 5, True)
            layer(f"{b}.conv1", f"{s}/Conv1", rl * 2 - 4, False)
        if arch == "skip" or r == res:
            out[f"{b}.torgb.weight"] = p[f"{s}/ToRGB/weight"].transpose(3, 2, 0, 1)
            out[f"{b}.torgb.bias"] = p[f"{s}/ToRGB/bias"]
            out[f"{b}.torgb.affine.weight"] = p[f"{s}/ToRGB/mod_weight"].T
            out[f"{b}.torgb.affine.bias"] = p[f"{s}/ToRGB/mod_bias"] + 1
        if arch == "resnet" and r > 4:
            out[f"{b}.skip.weight"] = p[f"{s}/Skip/weight"][::-1, ::-1].transpose(3, 2, 0, 1)
            out[f"{b}.skip.resample_filter"] = f
        out[f"{b}.resample_filter"] = f
    return out, kwargs


def convert_tf_discriminator(tf_d):
    kw, used = tf_d.static_kwargs, set()
    res = _kw(kw, used, "resolution", 1024)
    kernel = _kw(kw, used, "resample_kernel", [1, 3, 3, 1])
    kwargs = {
        "c_dim": _kw(kw, used, "label_size", 0),
        "img_resolution": res,
        "img_channels": _kw(kw, used, "num_channels", 3),
        "architecture": _kw(kw, used, "architecture", "resnet"),
        "channel_base": _kw(kw, used, "fmap_base", 16384) * 2,
        "channel_max": _kw(kw, used, "fmap_max", 512),
        "num_fp16_res": _kw(kw, used, "num_fp16_res", 0),
        "conv_clamp": _kw(kw, used, "conv_clamp", None),
        # The TF network's own default group size (D_stylegan2's signature) when the pickle does not override it.
        "epilogue_kwargs": {
            "mbstd_group_size": _kw(kw, used, "mbstd_group_size", 4),
            "mbstd_num_channels": _kw(kw, used, "mbstd_num_features", 1),
        },
    }
    p = _tf_params(tf_d)
    for name, value in list(p.items()):
        m = re.fullmatch(r"FromRGB_lod(\d+)/(.*)", name)
        if m:
            r = res // (2 ** int(m.group(1)))
            p[f"{r}x{r}/FromRGB/{m.group(2)}"] = value
            kwargs["architecture"] = "orig"
    f = _filter(kernel)
    out = {}
    for rl in range(int(np.log2(res)), 2, -1):
        r = 2**rl
        s = f"{r}x{r}"
        if f"{s}/FromRGB/weight" in p:
            out[f"b{r}.fromrgb.weight"] = p[f"{s}/FromRGB/weight"].transpose(3, 2, 0, 1)
            out[f"b{r}.fromrgb.bias"] = p[f"{s}/FromRGB/bias"]
            out[f"b{r}.fromrgb.resample_filter"] = f
        for i, name in ((0, "Conv0"), (1, "Conv1_down")):
            out[f"b{r}.conv{i}.weight"] = p[f"{s}/{name}/weight"].transpose(3, 2, 0, 1)
            out[f"b{r}.conv{i}.bias"] = p[f"{s}/{name}/bias"]
            out[f"b{r}.conv{i}.resample_filter"] = f
        if f"{s}/Skip/weight" in p:
            out[f"b{r}.skip.weight"] = p[f"{s}/Skip/weight"].transpose(3, 2, 0, 1)
            out[f"b{r}.skip.resample_filter"] = f
        out[f"b{r}.resample_filter"] = f
    if "LabelEmbed/weight" in p:
        out["mapping.embed.weight"] = p["LabelEmbed/weight"].T
        out["mapping.embed.bias"] = p["LabelEmbed/bias"]
        i = 0
        while f"Mapping{i}/weight" in p:
            out[f"mapping.fc{i}.weight"] = p[f"Mapping{i}/weight"].T
            out[f"mapping.fc{i}.bias"] = p[f"Mapping{i}/bias"]
            i += 1
    out["b4.conv.weight"] = p["4x4/Conv/weight"].transpose(3, 2, 0, 1)
    out["b4.conv.bias"] = p["4x4/Conv/bias"]
    out["b4.conv.resample_filter"] = f
    out["b4.fc.weight"] = p["4x4/Dense0/weight"].T
    out["b4.fc.bias"] = p["4x4/Dense0/bias"]
    out["b4.out.weight"] = p["Output/weight"].T
    out["b4.out.bias"] = p["Output/bias"]
    return out, kwargs


def _module_state(obj, prefix=""):
    """Parameters and buffers of a pickled torch module (a persistent stand-in or a real nn.Module)."""
    state = obj.state if isinstance(obj, _Persistent) else obj.__dict__
    out = {}
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is not None:
                out[prefix + name] = t.detach().cpu().numpy()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_state(child, prefix + name + "."))
    return out


def convert(src):
    with open(src, "rb") as fh:
        data = _Unpickler(fh).load()
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(x, _TFNetwork) for x in data):
        _g, d, gs = data
        g_state, g_kwargs = convert_tf_generator(gs)
        d_state, d_kwargs = convert_tf_discriminator(d)
        return g_state, d_state, {"G": g_kwargs, "D": d_kwargs}
    if isinstance(data, dict) and "G_ema" in data:
        g, d = data["G_ema"], data.get("D")
        g_kwargs = dict(g.init_kwargs) if isinstance(g, _Persistent) else {}
        out_kwargs = {"G": g_kwargs}
        d_state = None
        if d is not None:
            d_state = _module_state(d)
            out_kwargs["D"] = dict(d.init_kwargs) if isinstance(d, _Persistent) else {}
        return _module_state(g), d_state, out_kwargs
    raise SystemExit(f"{src}: not a StyleGAN2 network pickle (expected a TF (G, D, Gs) tuple or an ada dict with G_ema)")


def save_safetensors(path, tensors):
    """Writes a safetensors file (the format is a JSON header plus raw little-endian data)."""
    header, blobs, offset = {}, [], 0
    names = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}
    for name in sorted(tensors):
        a = np.array(tensors[name], order="C")  # keeps 0-d arrays 0-d (ascontiguousarray would not)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(len(h).to_bytes(8, "little"))
        fh.write(h)
        for b in blobs:
            fh.write(b)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src, prefix = argv[1], argv[2]
    if not os.path.exists(src):
        print(f"error: {src}: no such file", file=sys.stderr)
        return 1
    g_state, d_state, kwargs = convert(src)
    save_safetensors(prefix + "-G.safetensors", g_state)
    written = [prefix + "-G.safetensors"]
    if d_state is not None:
        save_safetensors(prefix + "-D.safetensors", d_state)
        written.append(prefix + "-D.safetensors")
    tmp = prefix + "-kwargs.json.tmp"
    with open(tmp, "w") as fh:
        json.dump(kwargs, fh, indent=2)
    os.replace(tmp, prefix + "-kwargs.json")
    written.append(prefix + "-kwargs.json")
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
