//! A folder (searched recursively) or a zip of PNG, JPEG, WebP and GIF files, in sorted path order.

use super::{Item, Payload, Source};
use anyhow::{ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "gif"];

fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

enum Store {
    Dir(PathBuf),
    Zip(Box<zip::ZipArchive<std::fs::File>>),
}

pub struct Images {
    path: PathBuf,
    store: Store,
    /// Relative paths (folder) or entry names (zip), sorted.
    names: Vec<String>,
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() || (ft.is_symlink() && p.is_dir()) {
            walk(root, &p, out)?;
        } else if is_image_name(&e.file_name().to_string_lossy()) {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

impl Images {
    pub fn open(path: &Path) -> Result<Images> {
        ensure!(path.exists(), "{}: no such file or folder", path.display());
        let (store, mut names) = if path.is_dir() {
            let mut names = vec![];
            walk(path, path, &mut names)?;
            (Store::Dir(path.to_path_buf()), names)
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let z = zip::ZipArchive::new(f)
                .with_context(|| format!("{}: not a folder or a zip archive (or a truncated zip)", path.display()))?;
            let names = z.file_names().filter(|n| !n.ends_with('/') && is_image_name(n)).map(String::from).collect();
            (Store::Zip(Box::new(z)), names)
        };
        names.sort();
        ensure!(!names.is_empty(), "{}: holds no PNG, JPEG, WebP or GIF files", path.display());
        Ok(Images { path: path.to_path_buf(), store, names })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Source for Images {
    fn len(&self) -> u64 {
        self.names.len() as u64
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let name = &self.names[index as usize];
        let bytes = match &mut self.store {
            Store::Dir(root) => {
                let p = root.join(name);
                std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?
            }
            Store::Zip(z) => {
                let mut e = z.by_name(name).with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
                let mut b = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut b)
                    .with_context(|| format!("{}: cannot read {name} (truncated?)", self.path.display()))?;
                b
            }
        };
        Ok(Item { key: name.clone(), payload: Payload::Encoded(bytes), label: None })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "images", "path": self.path.display().to_string() })
    }
}
