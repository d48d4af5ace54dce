//! Architecture rules for the `onramp` library, checked on the source text.
//!
//! The crate is laid out in layers: plain data and configuration at the bottom, then protocol,
//! persistence and hub connectors, the domain's services above them, the front ends (transports)
//! above those, and `service` (the composition root) on top. Nothing in the compiler stops a new
//! `use crate::...` from pointing the wrong way, and once a few do, the modules stop being
//! separable. These tests make the intended shape explicit and fail, naming every `file:line`,
//! when an edge breaks it:
//!
//! 1. nothing depends on `service`, the composition root;
//! 2. `model` and `config` import nothing from the crate;
//! 3. edges only point down (or sideways) in the layer table `LAYERS` below, and every top-level
//!    module has to be given a layer there deliberately;
//! 4. the top-level modules form no cycle;
//! 5. transports do not write the store (no `Store` write method, no cache `.invalidate(`, no
//!    `append_audit`): operator changes go through the domain, which validates, writes,
//!    invalidates and audits.
//!
//! The cycle test also prints the module graph (each module's outgoing edges, counted in files),
//! the cycles and the largest source files, to measure the module graph before and after a change:
//!
//! ```text
//! cargo test -p server --test architecture -- --nocapture
//! rustc --edition 2021 --test server/tests/architecture.rs -o /tmp/arch \
//!     && ONRAMP_SRC=server/src /tmp/arch --nocapture
//! ```
//!
//! The source root is `$ONRAMP_SRC` if set, else the crate's `src/`. The test is std-only and
//! text-based (it also runs under plain rustc, without building the crate):
//!
//! - A file's top-level module is its first path component under `src/`
//!   (`transport/console/auth.rs` is in `transport`, `service.rs` is `service`); the modules are
//!   discovered from the listing (`x.rs` files and `x/` directories). `lib.rs`, `main.rs` (with
//!   its modules in `cli/`) and `bin/` are the crate root and binaries: they may use anything and
//!   are not checked.
//! - Comments (including doc comments), string and character literals are blanked first, and
//!   everything from a `#[cfg(test)]` line to the end of the file is dropped: by convention test
//!   modules sit at the end of their file, and tests may reach across layers.
//! - An edge is every `crate::NAME`, including the names directly inside `crate::{..}` groups,
//!   where NAME is another top-level module. `super::` is ignored (it stays inside a module, except
//!   in a top-level file, where it is the crate root). `$crate::` in macros is not an edge.
//! - A store write is a call `.NAME(` (or `Store::NAME(`) of a method of `pub trait Store` (in
//!   `store/mod.rs`) whose name starts with a write prefix (`put_`, `delete_`, ...). The domain's
//!   services mirror some of those names on purpose (`state.admin.put_hub(..)`), so a method call
//!   whose receiver is one of `DOMAIN_RECEIVERS` (`state.admin`, `self.device_hub`, `admin`) is
//!   not one; any other receiver (`state.store`, `self.0`, `s`) is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: an edge `a -> b` is allowed only if `b`'s layer is not above `a`'s.
/// Every top-level module must appear here.
const LAYERS: &[&[&str]] = &[
    &["model", "config"],
    &["proto", "attestation", "pki", "test_certs", "metrics"],
    &[
        "store",
        "allocation",
        "hubs",
        "diagnostics",
        "tls",
        "coordination",
    ],
    &["domain", "bootstrap", "janitor", "sinks"],
    &["state"],
    &["transport", "bulk"],
    &["service", "fuzzing"],
];

/// The composition root: it wires everything together, so nothing may depend on it.
const COMPOSITION_ROOT: &str = "service";

/// Modules that must not import anything from the crate.
const LEAVES: &[&str] = &["model", "config"];

/// `Store` methods whose name starts with one of these write.
const WRITE_PREFIXES: &[&str] = &[
    "put_", "delete_", "append_", "create_", "insert_", "update_", "upsert_", "save_", "finish_",
    "init_", "set_",
];

/// `Store` methods that are never writes, whatever their name.
const NOT_WRITES: &[&str] = &["close"];

/// Calls a transport must not make on any receiver: cache invalidation belongs to the domain.
const FORBIDDEN_IN_TRANSPORT_METHODS: &[&str] = &["invalidate"];

/// Names a transport must not mention at all (auditing belongs to the domain).
const FORBIDDEN_IN_TRANSPORT_NAMES: &[&str] = &["append_audit"];

const TRANSPORT: &str = "transport";

/// Receivers (the field or variable right before the `.`) that are domain services, whose
/// methods may share a name with a store write: `state.admin.put_hub(..)` goes through the domain.
const DOMAIN_RECEIVERS: &[&str] = &["admin", "device_hub", "provisioner"];

/// Calls looked through when naming a receiver: `self.admin.as_ref().put_hub(..)` is on `admin`.
const ADAPTERS: &[&str] = &["as_ref", "clone", "deref", "await"];

/// How many cycles are listed at most (a dense tangle has very many).
const MAX_CYCLES: usize = 200;

// ---------------------------------------------------------------------------------------------
// The rules

#[test]
fn nothing_depends_on_the_composition_root() {
    let tree = Tree::load();
    let bad: Vec<String> = tree
        .edges()
        .iter()
        .filter(|e| e.to == COMPOSITION_ROOT)
        .map(Edge::describe)
        .collect();
    assert!(
        bad.is_empty(),
        "`{COMPOSITION_ROOT}` is the composition root; nothing may use it ({} edge(s)):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn model_and_config_import_nothing_from_the_crate() {
    let tree = Tree::load();
    let bad: Vec<String> = tree
        .edges()
        .iter()
        .filter(|e| LEAVES.contains(&e.from.as_str()))
        .map(Edge::describe)
        .collect();
    assert!(
        bad.is_empty(),
        "{} import nothing from the crate ({} edge(s)):\n{}",
        LEAVES.join(" and "),
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn layers_only_point_down() {
    let tree = Tree::load();
    let mut problems: Vec<String> = tree
        .modules
        .iter()
        .filter(|m| rank(m).is_none())
        .map(|m| format!("  give module {m} a layer in tests/architecture.rs (LAYERS)"))
        .collect();
    for e in tree.edges() {
        match (rank(&e.from), rank(&e.to)) {
            (Some(from), Some(to)) if to > from => {
                problems.push(format!("{}  (layer {from} uses layer {to})", e.describe()));
            }
            _ => {}
        }
    }
    assert!(
        !tree.modules.is_empty(),
        "no top-level modules found under {}",
        tree.root.display()
    );
    assert!(
        problems.is_empty(),
        "edges must point down the layers (LAYERS in tests/architecture.rs); {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let tree = Tree::load();
    let edges = tree.edges();
    let graph = Graph::new(&edges);
    let cycles = graph.cycles();
    println!("{}", report(&tree, &graph, &cycles));
    assert!(
        !tree.modules.is_empty(),
        "no top-level modules found under {}",
        tree.root.display()
    );
    let listed: Vec<String> = cycles.iter().map(|c| graph.describe_cycle(c)).collect();
    assert!(
        cycles.is_empty(),
        "the top-level modules form {} cycle(s){}:\n{}",
        cycles.len(),
        if cycles.len() >= MAX_CYCLES {
            " (listing stopped there)"
        } else {
            ""
        },
        listed.join("\n")
    );
}

#[test]
fn transports_do_not_write_the_store() {
    let tree = Tree::load();
    let writes = store_write_methods(&tree);
    assert!(
        !writes.is_empty(),
        "found no write methods in `pub trait Store` (store/mod.rs); the parser is out of date"
    );
    let listed: Vec<&str> = writes.iter().map(String::as_str).collect();
    println!("store write methods: {}", listed.join(", "));
    let mut bad = Vec::new();
    for file in tree.files.iter().filter(|f| f.module() == Some(TRANSPORT)) {
        bad.extend(transport_violations(file, &writes));
    }
    assert!(
        bad.is_empty(),
        "transports change state through the domain, not the store ({} call(s); a receiver \
         that is a domain service belongs in DOMAIN_RECEIVERS):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

// ---------------------------------------------------------------------------------------------
// The source tree

struct Tree {
    root: PathBuf,
    /// Top-level modules, from the directory listing.
    modules: BTreeSet<String>,
    files: Vec<SourceFile>,
}

struct SourceFile {
    /// Path under the source root, with `/`.
    rel: String,
    /// Lines in the file as written.
    lines: usize,
    /// The file with comments and literals blanked and the test module dropped; line numbers are
    /// those of the file.
    code: String,
}

impl SourceFile {
    /// The top-level module, or `None` for the crate root and binaries.
    fn module(&self) -> Option<&str> {
        let first = self.rel.split('/').next().unwrap_or_default();
        match first {
            "lib.rs" | "main.rs" | "cli" | "bin" => None,
            _ => Some(first.strip_suffix(".rs").unwrap_or(first)),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.code.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

impl Edge {
    fn describe(&self) -> String {
        format!(
            "  {}:{}: {} -> {}",
            self.file, self.line, self.from, self.to
        )
    }
}

impl Tree {
    fn load() -> Tree {
        let root = source_root();
        assert!(
            root.is_dir(),
            "source root {} is not a directory (set ONRAMP_SRC)",
            root.display()
        );
        let mut paths = Vec::new();
        rs_files(&root, &mut paths);
        paths.sort();
        let files = paths
            .iter()
            .map(|path| {
                let text = fs::read_to_string(path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let rel = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                SourceFile {
                    rel,
                    lines: text.lines().count(),
                    code: drop_tests(&strip(&text)),
                }
            })
            .collect();
        let modules = top_level_modules(&root);
        Tree {
            root,
            modules,
            files,
        }
    }

    /// Every use of another top-level module, in file order.
    fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for file in &self.files {
            let Some(own) = file.module() else { continue };
            for (name, offset) in crate_paths(&file.code) {
                if name != own && self.modules.contains(&name) {
                    edges.push(Edge {
                        from: own.to_string(),
                        to: name,
                        file: file.rel.clone(),
                        line: file.line_of(offset),
                    });
                }
            }
        }
        edges
    }
}

fn source_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONRAMP_SRC") {
        return PathBuf::from(dir);
    }
    match option_env!("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(dir).join("src"),
        None => panic!("set ONRAMP_SRC to the crate's src directory (not built by cargo)"),
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `x.rs` files and `x/` directories holding Rust files, except the crate root and binaries.
fn top_level_modules(root: &Path) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    let entries = fs::read_dir(root).unwrap_or_else(|e| panic!("listing {}: {e}", root.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            let mut inside = Vec::new();
            rs_files(&path, &mut inside);
            // The binaries' own directories: `bin/` and `cli/` (the command line's modules).
            if name != "bin" && name != "cli" && !inside.is_empty() {
                modules.insert(name);
            }
        } else if let Some(stem) = name
            .strip_suffix(".rs")
            .filter(|stem| *stem != "lib" && *stem != "main")
        {
            modules.insert(stem.to_string());
        }
    }
    modules
}

// ---------------------------------------------------------------------------------------------
// Reading Rust roughly

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Blanks comments, string literals (plain, raw, byte, C) and character literals with spaces,
/// keeping line breaks so that offsets map to the original lines. Lifetimes are kept.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let n = b.len();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(n)] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let at = |i: usize| if i < n { b[i] } else { 0 };
    let mut i = 0;
    while i < n {
        match b[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(n, |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let (mut j, mut depth) = (i + 2, 1);
                while j < n && depth > 0 {
                    if b[j] == b'/' && at(j + 1) == b'*' {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && at(j + 1) == b'/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'"' => {
                let mut j = i + 1;
                while j < n && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            b'r' if raw_string_may_start(b, i) => {
                let mut j = i + 1;
                while at(j) == b'#' {
                    j += 1;
                }
                let hashes = j - i - 1;
                if at(j) != b'"' {
                    i += 1; // an identifier such as `r#type`, or just `r`
                    continue;
                }
                let content = j + 1;
                let mut k = content;
                while k < n && !closes_raw(b, k, hashes) {
                    k += 1;
                }
                blank(&mut out, content, k);
                i = k + 1 + hashes;
            }
            b'\'' => {
                if at(i + 1) == b'\\' {
                    let mut j = i + 3;
                    while j < n && b[j] != b'\'' {
                        j += 1;
                    }
                    blank(&mut out, i + 1, j);
                    i = j + 1;
                } else {
                    let len = utf8_len(at(i + 1));
                    if at(i + 1 + len) == b'\'' {
                        blank(&mut out, i + 1, i + 1 + len);
                        i += 2 + len;
                    } else {
                        i += 1; // a lifetime or label
                    }
                }
            }
            c if is_ident(c) => {
                // Skip the whole identifier, so an `r` inside one starts nothing, but look at the
                // `r` of `br` / `cr` again (a raw byte or C string). After `b` / `c` the `"` or
                // `'` arm takes a byte or C literal next.
                let start = i;
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
                let word = &b[start..i];
                if (word == b"br" || word == b"cr") && matches!(at(i), b'#' | b'"') {
                    i -= 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether the `r` at `i` begins a raw string: `r`, `br` or `cr` standing alone before `#`/`"`.
fn raw_string_may_start(b: &[u8], i: usize) -> bool {
    let before = |k: usize| k == 0 || !is_ident(b[k - 1]);
    before(i) || (i > 0 && matches!(b[i - 1], b'b' | b'c') && before(i - 1))
}

/// Whether the `"` at `k` followed by `hashes` `#`s closes a raw string.
fn closes_raw(b: &[u8], k: usize, hashes: usize) -> bool {
    b[k] == b'"' && k + hashes < b.len() && b[k + 1..=k + hashes].iter().all(|&c| c == b'#')
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Drops everything from the first `#[cfg(test)]` line on: test modules sit at the end of their
/// file by convention, and tests may use anything.
fn drop_tests(code: &str) -> String {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        if line.trim_start().starts_with("#[cfg(test)]") {
            return code[..offset].to_string();
        }
        offset += line.len();
    }
    code.to_string()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(b: &[u8], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    while j < b.len() && is_ident(b[j]) {
        j += 1;
    }
    (j > i && !b[i].is_ascii_digit()).then(|| (String::from_utf8_lossy(&b[i..j]).into_owned(), j))
}

/// Offsets of `word` standing alone (not part of a longer identifier, not after `$`).
fn word_offsets<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let b = code.as_bytes();
    code.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let end = i + word.len();
        (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b'$'))
            && (end >= b.len() || !is_ident(b[end]))
    })
}

/// The first segment of every `crate::` path, with its offset: `crate::a::X` gives `a`, and
/// `crate::{a::X, b, c::{..}}` gives `a`, `b` and `c`.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    for start in word_offsets(code, "crate") {
        let mut i = skip_ws(b, start + "crate".len());
        if !code[i..].starts_with("::") {
            continue;
        }
        i = skip_ws(b, i + 2);
        if let Some((name, _)) = ident_at(b, i) {
            found.push((name, i));
        } else if b.get(i) == Some(&b'{') {
            let (mut j, mut depth, mut expect_name) = (i + 1, 1, true);
            while j < b.len() && depth > 0 {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    b',' if depth == 1 => expect_name = true,
                    c if is_ident(c) => {
                        let (name, end) = ident_at(b, j).unwrap_or_default();
                        if depth == 1 && expect_name && !name.is_empty() {
                            found.push((name, j));
                        }
                        expect_name = false;
                        j = end.max(j + 1);
                        continue;
                    }
                    c if c.is_ascii_whitespace() => {}
                    _ => expect_name = false,
                }
                j += 1;
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The store rule

/// The write methods of `pub trait Store` in `store/mod.rs` (or `store.rs`).
fn store_write_methods(tree: &Tree) -> BTreeSet<String> {
    let file = tree
        .files
        .iter()
        .find(|f| f.rel == "store/mod.rs" || f.rel == "store.rs")
        .expect("store/mod.rs (or store.rs) holds `pub trait Store`");
    let code = &file.code;
    let b = code.as_bytes();
    let start = word_offsets(code, "trait")
        .find(|&i| {
            let j = skip_ws(b, i + "trait".len());
            ident_at(b, j).is_some_and(|(name, _)| name == "Store")
        })
        .unwrap_or_else(|| panic!("no `pub trait Store` in {}", file.rel));
    let open = start + code[start..].find('{').expect("the trait's body");
    let mut depth = 0;
    let mut close = b.len();
    for (k, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = k;
                    break;
                }
            }
            _ => {}
        }
    }
    let body = &code[open..close];
    word_offsets(body, "fn")
        .filter_map(|i| ident_at(body.as_bytes(), skip_ws(body.as_bytes(), i + 2)))
        .map(|(name, _)| name)
        .filter(|name| {
            !NOT_WRITES.contains(&name.as_str())
                && WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

/// Identifiers of the receiver chain ending just before the `.` at `dot`: for
/// `state.store.as_ref().put_x(` that is `as_ref`, `store`, `state`.
fn receiver_chain(b: &[u8], dot: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = dot;
    loop {
        while i > 0 && b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        while i > 0 && b[i - 1] == b'?' {
            i -= 1;
        }
        while i > 0 && matches!(b[i - 1], b')' | b']') {
            i = matching_open(b, i - 1);
        }
        let end = i;
        while i > 0 && is_ident(b[i - 1]) {
            i -= 1;
        }
        names.push(String::from_utf8_lossy(&b[i..end]).into_owned());
        let mut j = i;
        while j > 0 && b[j - 1].is_ascii_whitespace() {
            j -= 1;
        }
        if j > 0 && b[j - 1] == b'.' && !(j > 1 && b[j - 2] == b'.') {
            i = j - 1;
        } else {
            return names;
        }
    }
}

/// The offset of the bracket opening the one that closes at `close`.
fn matching_open(b: &[u8], close: usize) -> usize {
    let mut depth = 0;
    for k in (0..=close).rev() {
        match b[k] {
            b')' | b']' | b'}' => depth += 1,
            b'(' | b'[' | b'{' => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    0
}

/// Whether a call's receiver chain (nearest first) ends in a domain service.
fn on_domain_service(chain: &[String]) -> bool {
    chain
        .iter()
        .find(|name| !ADAPTERS.contains(&name.as_str()))
        .is_some_and(|name| DOMAIN_RECEIVERS.contains(&name.as_str()))
}

/// Whether the name ending at `after` is called: `(` follows, possibly after a turbofish.
fn called(b: &[u8], after: usize) -> bool {
    let mut i = skip_ws(b, after);
    if b[i..].starts_with(b"::") {
        i = skip_ws(b, i + 2);
        if b.get(i) != Some(&b'<') {
            return false;
        }
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                b'<' => depth += 1,
                b'>' if b[i - 1] == b'-' => {}
                b'>' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i = skip_ws(b, i + 1);
    }
    b.get(i) == Some(&b'(')
}

fn transport_violations(file: &SourceFile, writes: &BTreeSet<String>) -> Vec<String> {
    let code = &file.code;
    let b = code.as_bytes();
    let mut found: Vec<(usize, String)> = Vec::new();
    let is_call = |after: usize| called(b, after);
    for name in writes {
        for i in word_offsets(code, name).filter(|&i| is_call(i + name.len())) {
            let before = code[..i].trim_end();
            if let Some(receiver_end) = before.strip_suffix('.').map(str::len) {
                let chain = receiver_chain(b, receiver_end);
                if !on_domain_service(&chain) {
                    let receiver: Vec<&str> = chain.iter().rev().map(String::as_str).collect();
                    let what = format!("`{}.{name}(..)` writes the store", receiver.join("."));
                    found.push((i, what));
                }
            } else if let Some(path) = before.strip_suffix("::") {
                let path = path.trim_end();
                if path.ends_with("Store") || path.ends_with("Store>") {
                    found.push((i, format!("`Store::{name}(..)` writes the store")));
                }
            }
        }
    }
    for name in FORBIDDEN_IN_TRANSPORT_METHODS {
        for i in word_offsets(code, name).filter(|&i| is_call(i + name.len())) {
            let before = code[..i].trim_end();
            if before.ends_with('.') || before.ends_with("::") {
                let what = format!("`.{name}(..)`: cache invalidation belongs to the domain");
                found.push((i, what));
            }
        }
    }
    for name in FORBIDDEN_IN_TRANSPORT_NAMES {
        for i in word_offsets(code, name) {
            if !found.iter().any(|(at, _)| *at == i) {
                found.push((i, format!("`{name}`: auditing belongs to the domain")));
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|(offset, what)| format!("  {}:{}: {what}", file.rel, file.line_of(offset)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The module graph

struct Graph<'a> {
    /// `from -> to ->` the edges, in file order.
    out: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a Edge>>>,
}

impl<'a> Graph<'a> {
    fn new(edges: &'a [Edge]) -> Graph<'a> {
        let mut out: BTreeMap<&str, BTreeMap<&str, Vec<&Edge>>> = BTreeMap::new();
        for e in edges {
            out.entry(&e.from)
                .or_default()
                .entry(&e.to)
                .or_default()
                .push(e);
        }
        Graph { out }
    }

    fn targets(&self, from: &str) -> impl Iterator<Item = &'a str> + '_ {
        self.out
            .get(from)
            .into_iter()
            .flat_map(|m| m.keys().copied())
    }

    /// Number of distinct files with an edge `from -> to`.
    fn files(&self, from: &str, to: &str) -> usize {
        let uses = &self.out[from][to];
        uses.iter().map(|e| &e.file).collect::<BTreeSet<_>>().len()
    }

    /// The elementary cycles, each as its modules from its smallest one (not repeated at the
    /// end), shortest first; at most `MAX_CYCLES`.
    fn cycles(&self) -> Vec<Vec<&'a str>> {
        let mut cycles = Vec::new();
        let starts: Vec<&str> = self.out.keys().copied().collect();
        for &start in &starts {
            let mut path = vec![start];
            self.walk(start, start, &mut path, &mut cycles);
        }
        cycles.sort_by_key(|c| (c.len(), c.clone()));
        cycles.truncate(MAX_CYCLES);
        cycles
    }

    fn walk(
        &self,
        start: &'a str,
        at: &'a str,
        path: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        for next in self.targets(at) {
            if cycles.len() >= MAX_CYCLES {
                return;
            }
            if next == start {
                cycles.push(path.clone());
            } else if next > start && !path.contains(&next) {
                path.push(next);
                self.walk(start, next, path, cycles);
                path.pop();
            }
        }
    }

    /// `a -> b -> a`, then one `file:line` per edge.
    fn describe_cycle(&self, cycle: &[&str]) -> String {
        let mut text = format!("  {} -> {}", cycle.join(" -> "), cycle[0]);
        for (k, from) in cycle.iter().enumerate() {
            let to = cycle[(k + 1) % cycle.len()];
            let e = self.out[from][to][0];
            let _ = write!(text, "\n      {from} -> {to}: {}:{}", e.file, e.line);
        }
        text
    }
}

/// The module graph, its cycles and the largest files, for `--nocapture`.
fn report(tree: &Tree, graph: &Graph, cycles: &[Vec<&str>]) -> String {
    let mut text = format!("module graph of {}\n", tree.root.display());
    let _ = writeln!(
        text,
        "(module [layer, files, lines] -> used module (files using it); * = points up a layer)"
    );
    let mut modules: Vec<&String> = tree.modules.iter().collect();
    modules.sort_by_key(|m| (rank(m).unwrap_or(usize::MAX), m.as_str()));
    let mut edge_count = 0;
    for m in modules {
        let (files, lines) = tree
            .files
            .iter()
            .filter(|f| f.module() == Some(m.as_str()))
            .fold((0, 0), |(n, l), f| (n + 1, l + f.lines));
        let layer = rank(m).map_or("none".to_string(), |r| r.to_string());
        let targets: Vec<String> = graph
            .targets(m)
            .map(|to| {
                edge_count += 1;
                let up = match (rank(m), rank(to)) {
                    (Some(a), Some(b)) if b > a => "*",
                    _ => "",
                };
                format!("{to}{up} ({})", graph.files(m, to))
            })
            .collect();
        let _ = writeln!(
            text,
            "  {m} [{layer}, {files} files, {lines} lines] -> {}",
            if targets.is_empty() {
                "(nothing)".to_string()
            } else {
                targets.join(", ")
            }
        );
    }
    let _ = writeln!(
        text,
        "{} modules, {edge_count} module edges\n\ncycles: {}{}",
        tree.modules.len(),
        cycles.len(),
        if cycles.len() >= MAX_CYCLES {
            " (listing stopped there)"
        } else {
            ""
        }
    );
    for cycle in cycles {
        let _ = writeln!(text, "{}", graph.describe_cycle(cycle));
    }
    let mut largest: Vec<&SourceFile> = tree.files.iter().collect();
    largest.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.rel.cmp(&b.rel)));
    let total: usize = tree.files.iter().map(|f| f.lines).sum();
    let _ = writeln!(
        text,
        "\nlargest files ({} files, {total} lines in all):",
        tree.files.len()
    );
    for f in largest.iter().take(10) {
        let _ = writeln!(text, "  {:>6}  {}", f.lines, f.rel);
    }
    text
}
