//! The walkthroughs (docs/LSUN_CATS.md, docs/CUSTOM_DATA.md) use only real options: every `sg2` line parses, every
//! `--set` and TOML snippet is a valid config, and every make variable and Argo parameter exists.

mod common;
use clap::Parser;
use common::root;
use sg2::cli::{Cli, Command};
use std::path::PathBuf;

const DOCS: [&str; 2] = ["docs/LSUN_CATS.md", "docs/CUSTOM_DATA.md"];

/// Fenced blocks of the given language, as text.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    // None: outside a block; Some(None): in a block of another language; Some(Some(text)): collecting.
    let mut cur: Option<Option<String>> = None;
    for line in doc.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("```") {
            match cur.take() {
                Some(Some(b)) => out.push(b),
                Some(None) => {}
                None => cur = Some((rest.trim() == lang).then(String::new)),
            }
            continue;
        }
        if let Some(Some(b)) = cur.as_mut() {
            b.push_str(t);
            b.push('\n');
        }
    }
    out
}

/// Shell words of a command line, quotes removed, up to the first operator or comment.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '|' | ';' | '>' | '&' | '#') if cur.is_empty() => break,
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Command lines of the bash blocks of every walkthrough (continuations joined).
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for b in blocks(&text, "bash") {
            for line in b.replace("\\\n", " ").lines() {
                let w = words(line);
                if !w.is_empty() {
                    out.push((doc.to_string(), w));
                }
            }
        }
    }
    out
}

#[test]
fn every_sg2_line_parses_and_its_config_overrides_are_valid() {
    let lines: Vec<_> = command_lines().into_iter().filter(|(_, w)| w[0] == "sg2").collect();
    assert!(lines.len() >= 20, "{}", lines.len());
    let mut seen = std::collections::BTreeSet::new();
    for (doc, argv) in &lines {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{doc}: sg2 rejects `{}`:\n{e}", argv.join(" ")));
        seen.insert(argv[1].clone());
        let (config, sets) = match &cli.command {
            Command::Train(a) => (Some(a.config.clone()), a.set.clone()),
            _ => {
                let sets: Vec<String> = argv.windows(2).filter(|w| w[0] == "--set").map(|w| w[1].clone()).collect();
                let config = argv.windows(2).find(|w| w[0] == "--config").map(|w| PathBuf::from(&w[1]));
                (config, sets)
            }
        };
        if let Some(config) = config {
            sg2::config::load(&root().join(&config), &sets)
                .unwrap_or_else(|e| panic!("{doc}: `{}`: {e}", argv.join(" ")));
        }
    }
    for s in ["dataset-tool", "train", "generate", "metrics", "import", "info", "style-mix", "interpolate"] {
        assert!(seen.contains(s), "no `sg2 {s}` in the walkthroughs");
    }
}

#[test]
fn toml_snippets_are_valid_configs() {
    let mut n = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for b in blocks(&text, "toml") {
            sg2::config::parse(&b, doc, &[]).unwrap_or_else(|e| panic!("{doc}: {e}\n{b}"));
            n += 1;
        }
    }
    assert!(n >= 2, "{n}");
}

#[test]
fn make_variables_and_argo_parameters_exist() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let declared = |v: &str| makefile.lines().any(|l| l.starts_with(v) && l[v.len()..].trim_start().starts_with("?="));
    let (mut makes, mut argos) = (0, 0);
    for (doc, w) in command_lines() {
        if w[0] == "make" {
            makes += 1;
            for a in &w[1..] {
                if let Some((var, _)) = a.split_once('=') {
                    assert!(declared(var), "{doc}: make variable {var} is not in the Makefile");
                }
            }
        }
        if w[0] == "argo" && w[1] == "submit" {
            argos += 1;
            let manifest = std::fs::read_to_string(root().join(&w[2])).unwrap();
            for p in w.windows(2).filter(|p| p[0] == "-p").map(|p| p[1].split_once('=').unwrap().0) {
                assert!(manifest.contains(&format!("- name: {p}\n")), "{doc}: {} has no parameter {p}", w[2]);
            }
        }
    }
    assert!(makes >= 2 && argos >= 2, "{makes} {argos}");
}

#[test]
fn the_word_splitter_follows_the_shell() {
    assert_eq!(
        words(r#"sg2 generate --network "$NET" --seeds 1-3 | tee x"#),
        ["sg2", "generate", "--network", "$NET", "--seeds", "1-3"]
    );
    assert_eq!(words("make -j A='x y' B= # note"), ["make", "-j", "A=x y", "B="]);
    assert_eq!(words("a && b"), ["a"]);
}
