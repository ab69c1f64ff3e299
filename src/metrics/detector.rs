//! The official feature networks: TorchScript modules (`inception-2015-12-05.pt`, `vgg16.pt`) called as the official
//! metric code calls them.
//!
//! The official code passes keyword arguments (`detector(img, return_features=True)`); tch's `CModule` passes
//! positional arguments only. A TorchScript archive carries the Python source of its `forward` (in `code/`), so the
//! signature is read from the file itself and the keywords are placed by name, every other argument taking its
//! declared default. The same call therefore works on the official files and on any module with those names, in
//! whatever order it declares them.

use crate::util::torch_message;
use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, IValue, Kind, Tensor};

/// Inception v3 (FID, KID, IS).
pub const INCEPTION: &str = "inception-2015-12-05.pt";
/// VGG16 with LPIPS weights (precision/recall, PPL).
pub const VGG16: &str = "vgg16.pt";

const CDN: &str = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics";
const NGC: &str = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics";

/// `$SG2_HOME`, or `~/.cache/sg2`.
pub fn sg2_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SG2_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("sg2")
}

/// Where detector files are looked up: `--detector-dir`, else `$SG2_HOME/detectors`.
pub fn detector_dir(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf).unwrap_or_else(|| sg2_home().join("detectors"))
}

/// Names what stands where a detector file should be, when something does.
fn ensure_file(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => bail!("{}: a folder, not a TorchScript detector file", p.display()),
        Ok(m) if !m.is_file() => bail!("{}: not a regular file (a TorchScript detector file is expected)", p.display()),
        _ => Ok(()),
    }
}

/// The path of detector `file` in `dir`, or an error that says where the official file is published and how to
/// convert the `.pkl` edition.
pub fn find(dir: Option<&Path>, file: &str) -> Result<PathBuf> {
    let d = detector_dir(dir);
    if d.exists() && !d.is_dir() {
        match dir {
            Some(_) => bail!("--detector-dir {}: not a folder", d.display()),
            None => bail!("{}: not a folder (the detector folder under $SG2_HOME)", d.display()),
        }
    }
    let p = d.join(file);
    if p.is_file() {
        return Ok(p);
    }
    ensure_file(&p)?;
    let stem = file.trim_end_matches(".pt");
    bail!(
        "{}: detector file not found. The official file is published at {CDN}/{file} (download it into {}, or run \
         scripts/fetch_detectors.sh {}); from the stylegan3 pickle {NGC}/{stem}.pkl convert it with: python3 -c \
         \"import pickle,torch; torch.jit.save(pickle.load(open('{stem}.pkl','rb')), '{file}')\"",
        p.display(),
        d.display(),
        d.display()
    )
}

/// SHA-256 (16 hex digits) of a file, remembered per (path, size, modification time): training evaluates every
/// snapshot, and hashing the 528 MB VGG16 each time would cost seconds.
fn file_hash(path: &Path) -> Result<String> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static HASHES: std::sync::Mutex<Vec<(Key, String)>> = std::sync::Mutex::new(Vec::new());
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some((_, h)) = HASHES.lock().unwrap().iter().find(|(k, _)| *k == key) {
        return Ok(h.clone());
    }
    let h = crate::data::shards::sha256_file(path, |_| {})?[..16].to_string();
    HASHES.lock().unwrap().push((key, h.clone()));
    Ok(h)
}

/// One argument of `forward` after the image: a bool with its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub default: Option<bool>,
}

/// A loaded detector.
pub struct Detector {
    pub path: PathBuf,
    /// File stem (`inception-2015-12-05`), as the official cache tags name it.
    pub name: String,
    /// SHA-256 of the file (first 16 hex digits): caches of real-image statistics are keyed by it.
    pub hash: String,
    /// `forward`'s arguments after the image, in declared order.
    pub params: Vec<Param>,
    module: CModule,
    pub device: Device,
}

impl Detector {
    /// Loads `path` on `device` and reads its `forward` signature.
    pub fn load(path: &Path, device: Device) -> Result<Detector> {
        ensure_file(path)?;
        ensure!(path.is_file(), "{}: detector file not found", path.display());
        let params = forward_signature(path)?;
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            anyhow::anyhow!("{}: not a loadable TorchScript detector ({})", path.display(), torch_message(&e))
        })?;
        module.set_eval();
        // Gradients only ever flow to the input (projection); none are kept for the detector's own weights.
        for (_, p) in module.named_parameters().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
            let _ = p.set_requires_grad(false);
        }
        let hash = file_hash(path)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Detector { path: path.to_path_buf(), name, hash, params, module, device })
    }

    /// Loads detector `file` from the detector folder.
    pub fn find_and_load(dir: Option<&Path>, file: &str, device: Device) -> Result<Detector> {
        Detector::load(&find(dir, file)?, device)
    }

    /// `forward(img, **kwargs)` as Python would call it: keywords placed by name, other arguments at their defaults.
    pub fn call(&self, img: &Tensor, kwargs: &[(&str, bool)]) -> Result<Tensor> {
        tch::no_grad(|| self.call_with_grad(img, kwargs))
    }

    /// [`Detector::call`] with autograd on: the output's gradient flows back to `img` (the projector's loss).
    pub fn call_with_grad(&self, img: &Tensor, kwargs: &[(&str, bool)]) -> Result<Tensor> {
        for (k, _) in kwargs {
            ensure!(
                self.params.iter().any(|p| p.name == *k),
                "{}: forward has no argument {k:?} (it takes {}); not the expected detector",
                self.path.display(),
                self.describe()
            );
        }
        let mut args = vec![IValue::Tensor(img.shallow_clone())];
        for p in &self.params {
            let v = match kwargs.iter().find(|(k, _)| *k == p.name) {
                Some((_, v)) => *v,
                None => p
                    .default
                    .with_context(|| format!("{}: forward argument {} has no default", self.path.display(), p.name))?,
            };
            args.push(IValue::Bool(v));
        }
        let out = self
            .module
            .forward_is(&args)
            .map_err(|e| anyhow::anyhow!("{}: forward failed: {}", self.path.display(), torch_message(&e)))?;
        match out {
            IValue::Tensor(t) => Ok(t),
            other => bail!("{}: forward returned {other:?}, expected a tensor", self.path.display()),
        }
    }

    /// uint8 NCHW images (1 or 3 channels) -> 2-D outputs, as the official metric code feeds them.
    pub fn run_u8(&self, img: &Tensor, kwargs: &[(&str, bool)]) -> Result<Tensor> {
        ensure!(img.dim() == 4 && img.kind() == Kind::Uint8, "detector input must be uint8 NCHW");
        let img = if img.size()[1] == 1 { img.repeat([1, 3, 1, 1]) } else { img.shallow_clone() };
        let out = self.call(&img.to_device(self.device), kwargs)?;
        ensure!(
            out.dim() == 2 && out.size()[0] == img.size()[0],
            "{}: output has shape {:?}, expected [{}, features]",
            self.path.display(),
            out.size(),
            img.size()[0]
        );
        if let Some(want) = expected_width(&self.name, kwargs) {
            ensure!(
                out.size()[1] == want,
                "{}: gives {} values per image where the official {} gives {want}; not the expected detector",
                self.path.display(),
                out.size()[1],
                self.name
            );
        }
        self.check_finite(&out)?;
        Ok(out)
    }

    /// Checks LPIPS features (`return_lpips`) of `n` images: [n, D] with D > 0, all finite.
    pub fn check_lpips(&self, out: &Tensor, n: i64) -> Result<()> {
        ensure!(
            out.dim() == 2 && out.size()[0] == n && out.size()[1] > 0,
            "{}: return_lpips gave shape {:?}, expected [{n}, D]",
            self.path.display(),
            out.size()
        );
        self.check_finite(out)
    }

    fn check_finite(&self, out: &Tensor) -> Result<()> {
        ensure!(crate::util::all_finite(out), "{}: gave NaN or infinite values", self.path.display());
        Ok(())
    }

    fn describe(&self) -> String {
        let a: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        format!("img, {}", a.join(", "))
    }
}

/// Output width of the official detectors for a call: Inception features 2048 or probabilities 1008, VGG16
/// features 4096. A file under an official name that gives another width is some other network.
fn expected_width(name: &str, kwargs: &[(&str, bool)]) -> Option<i64> {
    let on = |k: &str| kwargs.iter().any(|(n, v)| *n == k && *v);
    match name {
        "inception-2015-12-05" if on("return_features") => Some(2048),
        "inception-2015-12-05" => Some(1008),
        "vgg16" if on("return_features") => Some(4096),
        _ => None,
    }
}

/// Reads `forward`'s signature from the TorchScript archive: the top-level class named in `data.pkl`, and its
/// `def forward(self, img, ...)` in `code/`.
pub fn forward_signature(path: &Path) -> Result<Vec<Param>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut z = zip::ZipArchive::new(f)
        .map_err(|e| anyhow::anyhow!("{}: not a TorchScript file (not a zip archive: {e})", path.display()))?;
    let names: Vec<String> = z.file_names().map(String::from).collect();
    let data = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min()
        .with_context(|| format!("{}: not a TorchScript file (no data.pkl)", path.display()))?
        .clone();
    let root = data.trim_end_matches("data.pkl").to_string();
    let read = |z: &mut zip::ZipArchive<std::fs::File>, name: &str| -> Result<Vec<u8>> {
        let mut e = z.by_name(name).with_context(|| format!("{}: cannot read {name}", path.display()))?;
        let mut b = vec![];
        e.read_to_end(&mut b).with_context(|| format!("{}: cannot read {name}", path.display()))?;
        Ok(b)
    };
    let pkl = read(&mut z, &data)?;
    let (module, class) =
        top_class(&pkl).with_context(|| format!("{}: cannot find the module class", path.display()))?;
    let code_name = format!("{root}code/{}.py", module.replace('.', "/"));
    ensure!(
        names.contains(&code_name),
        "{}: the archive holds no source for {module}.{class} (saved without code?)",
        path.display()
    );
    let code = String::from_utf8_lossy(&read(&mut z, &code_name)?).into_owned();
    parse_forward(&code, &class).with_context(|| format!("{}: {module}.{class}", path.display()))
}

/// The first global in a TorchScript `data.pkl` (protocol 2 `GLOBAL` opcode): the top module's class.
fn top_class(pkl: &[u8]) -> Option<(String, String)> {
    let at = pkl.windows(10).position(|w| w == b"c__torch__")?;
    let rest = &pkl[at + 1..];
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let module = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let class = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((module, class))
}

/// Arguments after `self` and the image in `class <class>(...)`'s `def forward(...)`, each a `bool` with a default.
pub fn parse_forward(code: &str, class: &str) -> Result<Vec<Param>> {
    let start = code.find(&format!("class {class}(")).with_context(|| format!("no class {class} in its source"))?;
    let body = &code[start..];
    let def = body.find("def forward(").context("the class has no forward")?;
    let sig = &body[def + "def forward(".len()..];
    // The argument list ends at the parenthesis that closes `forward(`.
    let mut depth = 0i32;
    let mut end = None;
    for (i, ch) in sig.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' if depth > 0 => depth -= 1,
            ')' => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let sig = &sig[..end.context("unterminated forward signature")?];
    let mut args = vec![];
    let (mut depth, mut cur) = (0i32, String::new());
    for ch in sig.chars() {
        match ch {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    args.push(cur);
    let args: Vec<&str> = args.iter().map(|a| a.trim()).filter(|a| !a.is_empty()).collect();
    ensure!(args.len() >= 2, "forward takes no image argument");
    let mut params = vec![];
    for a in &args[2..] {
        let (name, rest) = a.split_once(':').map(|(n, r)| (n.trim(), r.trim())).unwrap_or((a.trim(), ""));
        let (ty, default) = match rest.split_once('=') {
            Some((t, d)) => (t.trim(), Some(d.trim())),
            None => (rest, None),
        };
        ensure!(ty.is_empty() || ty == "bool", "forward argument {name} has type {ty}; only bool flags are supported");
        let default = match default {
            None => None,
            Some("True") => Some(true),
            Some("False") => Some(false),
            Some(d) => bail!("forward argument {name} has default {d}, expected True or False"),
        };
        params.push(Param { name: name.to_string(), default });
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_serialized_forward_signatures() {
        let code = "class Other(Module):\n  def forward(self: __torch__.Other, x: Tensor) -> Tensor:\n    return x\n\
                    class InceptionV3(Module):\n  __parameters__ = []\n  def forward(self: __torch__.InceptionV3,\n    \
                    img: Tensor,\n    return_features: bool=False,\n    use_fp16: bool=False,\n    \
                    no_output_bias: bool=True) -> Tensor:\n    _0 = torch.zeros([1, 2])\n";
        let p = parse_forward(code, "InceptionV3").unwrap();
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.default)).collect();
        assert_eq!(
            names,
            [("return_features", Some(false)), ("use_fp16", Some(false)), ("no_output_bias", Some(true))]
        );
        assert!(parse_forward(code, "Missing").is_err());
        let bad = "class A(Module):\n  def forward(self: A, img: Tensor, scale: float=1.) -> Tensor:\n";
        assert!(parse_forward(bad, "A").unwrap_err().to_string().contains("type float"));
    }

    #[test]
    fn finds_the_top_class_in_data_pkl() {
        let pkl = b"\x80\x02c__torch__.foo\nVGG16\nq\x00)\x81}(X\x08\x00\x00\x00training";
        assert_eq!(top_class(pkl), Some(("__torch__.foo".into(), "VGG16".into())));
    }

    #[test]
    fn missing_file_error_names_file_url_and_conversion() {
        let dir = tempfile::tempdir().unwrap();
        let e = find(Some(dir.path()), INCEPTION).unwrap_err().to_string();
        assert!(e.contains(&dir.path().join(INCEPTION).display().to_string()), "{e}");
        assert!(e.contains(
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
        ));
        assert!(e.contains("torch.jit.save(pickle.load("), "{e}");
    }
}
