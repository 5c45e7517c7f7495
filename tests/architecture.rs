//! The layers point one way: a room of `src/` may import only rooms of lower rank (and
//! itself); two different rooms of the same rank stay apart. This test reads every `.rs`
//! file under `src/` as text (no parser crate), finds each reference to a room, and fails
//! naming the file, the line, the import and the rule it breaks.
//!
//! What counts as a reference: `crate::<room>`, `crate::{<room>, ..}`, `tpo_engine::<room>`
//! (the binary's view of the library) and `super::super::..` chains that climb to the crate
//! root and then name a room. Comments (doc comments included), string and char literals are
//! skipped. Code inside `#[cfg(test)]` modules obeys the same rule: a room's tests exercise
//! that room, and a test that needs a higher room belongs in `tests/` (or in that room).
//! `src/lib.rs`, the crate root that declares every room, is in no room.
//!
//! Inside a room, files should not import each other in a circle either: the circles there
//! were when this test was written are listed (`KNOWN_CIRCLES`), to be broken, not added to.
//!
//! It is NOT a compiler: macros that build paths, `#[path]` attributes and glob re-exports
//! of a room through another are not followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rooms, lowest rank first. `cli` is `src/cli/` and `src/main.rs`.
const ROOMS: &[(&str, u32)] = &[
    ("runtime", 1),
    ("liveness", 1),
    ("gpu", 2),
    ("model", 3),
    ("engine", 4),
    ("reward", 5),
    ("search", 6),
    ("dataset", 7),
    ("paths", 8),
    ("app", 9),
    ("viewer", 10),
    ("bench", 10),
    ("server", 11),
    ("cli", 12),
];

fn rank(room: &str) -> Option<u32> {
    ROOMS.iter().find(|(r, _)| *r == room).map(|(_, k)| *k)
}

/// One import that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    import: String,
    rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file, self.line, self.import, self.rule
        )
    }
}

/// `text` with comments, string literals and char literals blanked out (newlines kept, so
/// line numbers stay right).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&c, i) {
            // r"..", r#".."#, br#".."#: up to the quote and as many hashes.
            let open = c[i..].iter().position(|&x| x == '"').unwrap_or(0) + i;
            for &ch in &c[i..=open] {
                out.push(blank(ch));
            }
            i = open + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && is_char_literal(&c, i) {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(' ');
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// At `i`, the start of a raw string (`r"`, `r#"`, `br"`, ..) not inside an identifier: how
/// many `#` it uses.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
    (c.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// Whether the `'` at `i` opens a char literal (`'a'`, `'\n'`, `'\''`) rather than a
/// lifetime or label (`'a`, `'static`).
fn is_char_literal(c: &[char], i: usize) -> bool {
    match c.get(i + 1) {
        Some('\\') => true,
        Some(_) => c.get(i + 2) == Some(&'\''),
        None => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    _ => Tok::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// Every path of the `use` tree (or path expression) starting at `toks[at]`, with the line
/// of its last name: `a::b::c` is one path, `a::{b, c::{d, e}}` three (`a::b`, `a::c::d`,
/// `a::c::e`); a glob `a::*` is `a`; `self` in a group is the group's prefix. Also returns
/// the index after the tree.
fn paths_at(toks: &[(Tok, usize)], at: usize) -> (Vec<(Vec<String>, usize)>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    let mut line = toks.get(at).map_or(0, |t| t.1);
    let mut i = at;
    loop {
        match toks.get(i) {
            Some((Tok::Ident(s), l)) => {
                if s != "self" {
                    prefix.push(s.clone());
                }
                line = *l;
                i += 1;
                if toks.get(i).map(|t| &t.0) == Some(&Tok::Path) {
                    i += 1;
                    continue;
                }
                return (vec![(prefix, line)], i);
            }
            Some((Tok::Open, _)) => {
                i += 1;
                let mut out = Vec::new();
                while i < toks.len() && toks[i].0 != Tok::Close {
                    let (sub, next) = paths_at(toks, i);
                    out.extend(sub.into_iter().map(|(p, l)| {
                        let mut full = prefix.clone();
                        full.extend(p);
                        (full, l)
                    }));
                    i = next.max(i + 1);
                    // Skip `as alias` and the like, up to this item's end.
                    let mut depth = 0usize;
                    while let Some((t, _)) = toks.get(i) {
                        match t {
                            Tok::Open => depth += 1,
                            Tok::Close if depth == 0 => break,
                            Tok::Close => depth -= 1,
                            Tok::Comma if depth == 0 => {
                                i += 1;
                                break;
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                }
                return (out, i + 1);
            }
            _ => {
                let out = if prefix.is_empty() {
                    Vec::new()
                } else {
                    vec![(prefix, line)]
                };
                return (out, i);
            }
        }
    }
}

/// The room a file under `src/` belongs to (`None` for the crate root `lib.rs`), and its
/// module path inside the crate.
fn room_of(rel: &Path) -> Option<(String, Vec<String>)> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut module: Vec<String> = parts
        .iter()
        .map(|p| p.strip_suffix(".rs").unwrap_or(p).to_string())
        .collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    match module.first().map(String::as_str) {
        None | Some("lib") => None,
        // The binary's crate root: its modules are `cli`.
        Some("main") => Some(("cli".into(), Vec::new())),
        Some(room) => Some((room.to_string(), module)),
    }
}

/// A path a file uses, made absolute (from the crate root).
#[derive(Debug, Clone)]
struct Reference {
    /// From the crate root: `["engine", "sampler", "Sampled"]`.
    path: Vec<String>,
    line: usize,
    /// As written, up to the room: `crate::engine`, `super::super::paths`.
    import: String,
    /// Inside an inline `mod tests`.
    in_tests: bool,
}

/// Every path to a module of the crate each file uses: `crate::`, `tpo_engine::` and
/// `super::` paths, made absolute.
fn references(rel: &Path, text: &str) -> Vec<Reference> {
    let Some((_, module)) = room_of(rel) else {
        return Vec::new();
    };
    let toks = tokens(&code_only(text));
    let mut out = Vec::new();
    // Inline modules (`mod tests { .. }`) open at a brace depth: (name, depth).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let prev_is_path = i > 0 && toks[i - 1].0 == Tok::Path;
        let in_tests = inline.iter().any(|(name, _)| name == "tests");
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(name), Some((Tok::Open, _))) =
                    (ident(toks.get(i + 1)), toks.get(i + 2))
                {
                    inline.push((name.to_string(), depth));
                }
            }
            Tok::Ident(root)
                if (root == "crate" || root == "tpo_engine")
                    && !prev_is_path
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Path) =>
            {
                for (path, line) in paths_at(&toks, i + 2).0 {
                    let Some(first) = path.first() else { continue };
                    out.push(Reference {
                        import: format!("{root}::{first}"),
                        path,
                        line,
                        in_tests,
                    });
                }
            }
            Tok::Ident(s) if s == "super" && !prev_is_path => {
                let mut supers = 0;
                let mut j = i;
                while ident(toks.get(j)) == Some("super")
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::Path)
                {
                    supers += 1;
                    j += 2;
                }
                let here: Vec<String> = module
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|(name, _)| name.clone()))
                    .collect();
                if supers > 0 && supers <= here.len() {
                    for (tail, line) in paths_at(&toks, j).0 {
                        let mut path = here[..here.len() - supers].to_vec();
                        let import = match (path.is_empty(), tail.first()) {
                            (true, Some(first)) => format!("{}{first}", "super::".repeat(supers)),
                            _ => "super::".repeat(supers) + &tail.join("::"),
                        };
                        path.extend(tail);
                        out.push(Reference {
                            path,
                            line,
                            import,
                            in_tests,
                        });
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Checks every file (`rel` path under `src/`, text): the violations, and the files in no
/// known room.
fn check(files: &[(PathBuf, String)]) -> (Vec<Violation>, Vec<String>) {
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for (rel, text) in files {
        let Some((room, _)) = room_of(rel) else {
            continue;
        };
        let Some(own) = rank(&room) else {
            unknown.push(rel.display().to_string());
            continue;
        };
        for Reference {
            path, line, import, ..
        } in references(rel, text)
        {
            let Some(target) = path.first() else { continue };
            let Some(theirs) = rank(target) else {
                continue; // `crate::Error` and other names at the root that are not rooms
            };
            let rule = if theirs > own {
                format!("{room} (rank {own}) may not import {target} (rank {theirs})")
            } else if theirs == own && *target != room {
                format!(
                    "{room} (rank {own}) may not import {target} (rank {theirs}): rooms of the same rank stay apart"
                )
            } else {
                continue;
            };
            let v = Violation {
                file: format!("src/{}", rel.display()),
                line,
                import,
                rule,
            };
            // `crate::engine::{A, B}` is one import of the room, not two.
            if !violations.contains(&v) {
                violations.push(v);
            }
        }
    }
    (violations, unknown)
}

/// Circles of imports between the files of one room: each a set of files (as module paths,
/// `engine::scheduler`) that reach each other through `super::` / `crate::<room>::` paths.
/// A module and its own parent or children (a `mod.rs` re-exporting what its files define,
/// which in turn use its error type) are not counted, nor are paths inside `mod tests`; the
/// binary (`cli`) is left out.
fn file_circles(files: &[(PathBuf, String)]) -> Vec<Vec<String>> {
    let modules: Vec<Vec<String>> = files
        .iter()
        .filter_map(|(rel, _)| room_of(rel))
        .filter(|(room, _)| room != "cli")
        .map(|(_, m)| m)
        .collect();
    let index = |path: &[String]| -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|n| modules.iter().position(|m| m[..] == path[..n]))
    };
    let related = |a: &[String], b: &[String]| a.starts_with(b) || b.starts_with(a);
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); modules.len()];
    for (rel, text) in files {
        let Some((room, module)) = room_of(rel) else {
            continue;
        };
        let Some(from) = modules.iter().position(|m| *m == module) else {
            continue;
        };
        for r in references(rel, text) {
            if r.in_tests || r.path.first() != Some(&room) {
                continue;
            }
            if let Some(to) = index(&r.path) {
                if !related(&modules[from], &modules[to]) && !edges[from].contains(&to) {
                    edges[from].push(to);
                }
            }
        }
    }
    let reach = |start: usize| -> Vec<bool> {
        let mut seen = vec![false; modules.len()];
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for &m in &edges[n] {
                if !seen[m] {
                    seen[m] = true;
                    stack.push(m);
                }
            }
        }
        seen
    };
    let reaches: Vec<Vec<bool>> = (0..modules.len()).map(reach).collect();
    let mut done = vec![false; modules.len()];
    let mut circles = Vec::new();
    for a in 0..modules.len() {
        if done[a] || !reaches[a][a] {
            continue;
        }
        let members: Vec<usize> = (0..modules.len())
            .filter(|&b| reaches[a][b] && reaches[b][a])
            .collect();
        for &m in &members {
            done[m] = true;
        }
        let mut names: Vec<String> = members.iter().map(|&m| modules[m].join("::")).collect();
        names.sort();
        circles.push(names);
    }
    circles
}

fn rs_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rs_files(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let rel = path.strip_prefix(root).expect("under src/").to_path_buf();
            out.push((rel, text));
        }
    }
}

#[test]
fn lower_rooms_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let (violations, unknown) = check(&files);
    assert!(
        unknown.is_empty(),
        "files in no room (add their top-level module to ROOMS in tests/architecture.rs): {unknown:?}"
    );
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &violations {
        *per_rule.entry(v.rule.as_str()).or_default() += 1;
    }
    assert!(
        violations.is_empty(),
        "{} imports point up the layers:\n{}\n\nby rule: {per_rule:#?}",
        violations.len(),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Circles between files of one room that are tolerated: none (the two there were when this
/// test was written, `reward::config` <-> `reward::resolve` and `server::{body, error,
/// schema, validate}`, are broken). A circle not listed here fails the test, and so does a
/// listed one that is gone (take it off the list).
const KNOWN_CIRCLES: &[&[&str]] = &[];

#[test]
fn files_inside_a_room_import_each_other_in_no_new_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &src, &mut files);
    let circles = file_circles(&files);
    let known: Vec<Vec<String>> = KNOWN_CIRCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let new: Vec<String> = circles
        .iter()
        .filter(|c| !known.contains(c))
        .map(|c| c.join(" <-> "))
        .collect();
    assert!(
        new.is_empty(),
        "files of one room that import each other in a circle:\n{}",
        new.join("\n")
    );
    let gone: Vec<String> = known
        .iter()
        .filter(|k| !circles.contains(k))
        .map(|c| c.join(" <-> "))
        .collect();
    assert!(
        gone.is_empty(),
        "circles no longer there (remove them from KNOWN_CIRCLES): {gone:?}"
    );
}

#[test]
fn every_room_of_the_crate_root_has_a_rank() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    let code = code_only(&lib);
    let declared: Vec<&str> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').trim())
        .collect();
    assert!(declared.contains(&"gpu"), "{declared:?}");
    for m in declared {
        assert!(
            rank(m).is_some(),
            "src/lib.rs declares `{m}`, which has no rank in ROOMS"
        );
    }
}

mod checker {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    #[test]
    fn an_upward_import_is_caught_with_file_line_and_rule() {
        let files = tree(&[
            (
                "gpu/sampler.rs",
                "//! Kernels.\n\nuse super::GpuError;\nuse crate::engine::{LogitsError, Sampled};\n",
            ),
            ("engine/mod.rs", "use crate::gpu::GpuSampler;\n"),
        ]);
        let (violations, unknown) = check(&files);
        assert!(unknown.is_empty());
        assert_eq!(
            violations,
            vec![Violation {
                file: "src/gpu/sampler.rs".into(),
                line: 4,
                import: "crate::engine".into(),
                rule: "gpu (rank 2) may not import engine (rank 4)".into(),
            }]
        );
        assert_eq!(
            violations[0].to_string(),
            "src/gpu/sampler.rs:4: `crate::engine`: gpu (rank 2) may not import engine (rank 4)"
        );
    }

    #[test]
    fn groups_super_escapes_tests_and_the_binary_are_read() {
        let files = tree(&[
            // A group naming a higher room among others.
            ("model/mod.rs", "use crate::{runtime::Device, reward::RewardError};\n"),
            // `super::super` from `runtime::io` reaches the root; from `runtime::io::bind`
            // it stays in the room.
            ("runtime/io/mod.rs", "fn f() { super::super::paths::x(); }\n"),
            ("runtime/io/bind.rs", "use super::super::paths;\n"),
            // Tests obey the rule too; the inline module adds a level (two `super`s from
            // `gpu::path::tests` only reach `gpu`).
            (
                "gpu/path.rs",
                "fn a() {}\n#[cfg(test)]\nmod tests {\n    use super::super::driver_status;\n    use super::super::super::search::Trace;\n}\nuse super::super::app;\n",
            ),
            // Same rank, different rooms.
            ("viewer/x.rs", "use crate::bench::stats;\n"),
            // The binary sees the library as `tpo_engine`; the CLI may use everything.
            ("main.rs", "use tpo_engine::server::serve;\n"),
            ("cli/x.rs", "use tpo_engine::gpu;\n"),
        ]);
        let (violations, _) = check(&files);
        let got: Vec<(String, usize, String)> = violations
            .into_iter()
            .map(|v| (v.file, v.line, v.import))
            .collect();
        assert_eq!(
            got,
            vec![
                ("src/model/mod.rs".into(), 1, "crate::reward".into()),
                (
                    "src/runtime/io/mod.rs".into(),
                    1,
                    "super::super::paths".into()
                ),
                (
                    "src/gpu/path.rs".into(),
                    5,
                    "super::super::super::search".into()
                ),
                ("src/gpu/path.rs".into(), 7, "super::super::app".into()),
                ("src/viewer/x.rs".into(), 1, "crate::bench".into()),
            ]
        );
    }

    #[test]
    fn comments_strings_and_chars_are_not_imports() {
        let files = tree(&[(
            "gpu/x.rs",
            "//! See `crate::paths`.\n/// [`crate::engine::Sampled`]\n/* crate::reward /* nested */ crate::app */\nconst A: &str = \"crate::search\";\nconst B: &str = r#\"crate::server \"quoted\"\"#;\nconst C: char = '{';\nfn f<'a>(x: &'a str) -> &'a str { x }\n",
        )]);
        let (violations, _) = check(&files);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn a_circle_between_files_of_a_room_is_found() {
        let files = tree(&[
            ("engine/mod.rs", "mod a;\nmod b;\nmod c;\npub use a::A;\n"),
            ("engine/a.rs", "use super::b::B;\nuse super::EngineError;\n"),
            ("engine/b.rs", "use crate::engine::a::A;\nuse super::c;\n"),
            // `c` is used by `b` and uses only its parent: not in the circle.
            ("engine/c.rs", "use super::EngineError;\n"),
            // A test module's imports do not count.
            (
                "engine/d.rs",
                "use super::c;\n#[cfg(test)]\nmod tests {\n    use crate::engine::d;\n}\n",
            ),
        ]);
        assert_eq!(
            file_circles(&files),
            vec![vec!["engine::a".to_string(), "engine::b".to_string()]]
        );
    }

    #[test]
    fn a_file_outside_every_room_is_reported() {
        let (_, unknown) = check(&tree(&[("attic/old.rs", ""), ("lib.rs", "pub mod attic;")]));
        assert_eq!(unknown, vec!["attic/old.rs".to_string()]);
    }
}
