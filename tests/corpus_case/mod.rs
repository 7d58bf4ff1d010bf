//! Loader for the hostile-input corpus (`tests/corpus/*.json`; the format is described in
//! `tests/corpus/README.md`). Kept apart from the runner so that a test driving the real binary
//! (in the VM) can load the same cases with `mod corpus_case;`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The placeholder for the corpus directory's absolute path in environment values, so cases can
/// point at the fixtures (a regular file, symlinks) wherever the tree is checked out.
pub const CORPUS_DIR_PLACEHOLDER: &str = "{corpus}";

/// Largest byte string one case may expand to, so a typo in `times` cannot eat the machine.
const MAX_EXPANDED: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    pub name: String,
    pub about: String,
    /// The complete environment of the invocation; a variable not listed is unset.
    pub env: BTreeMap<String, OsString>,
    pub stdin: Vec<u8>,
    /// The CNI error code the parse layer must answer with; 0: it must accept the request.
    pub expect_code: u32,
    /// Must occur in the error's `msg` or `details` (the field or variable at fault).
    pub expect_in_msg: Option<String>,
    /// Whether the real binary must fail (and create nothing). Always true when `expect_code`
    /// is not 0; also true for requests the parse layer accepts but later stages must refuse
    /// (CNI_NETNS naming a regular file, say).
    // Read by the runner driving the real binary, not by the parse-layer runner.
    #[allow(dead_code)]
    pub binary_must_fail: bool,
}

/// Every `*.json` case directly in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, String> {
    let abs = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&abs)
        .map_err(|e| format!("{}: {e}", abs.display()))?
        .map(|d| d.map(|d| d.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", abs.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files.iter().map(|f| load(f, &abs)).collect()
}

/// One case file. Unknown fields are an error, so a misspelt expectation cannot be ignored.
pub fn load(file: &Path, corpus_dir: &Path) -> Result<Case, String> {
    let ctx = |e: String| format!("{}: {e}", file.display());
    let text = std::fs::read(file).map_err(|e| ctx(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| ctx(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ctx("not a JSON object".into()))?;
    const FIELDS: &[&str] = &[
        "name",
        "about",
        "env",
        "stdin",
        "stdin_json",
        "expect_code",
        "expect_in_msg",
        "binary_must_fail",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ctx(format!("unknown field {k:?}")));
    }
    let string = |k: &str| -> Result<String, String> {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ctx(format!("{k} must be a string")))
    };
    let name = string("name")?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if name != stem {
        return Err(ctx(format!("name {name:?} differs from the file name")));
    }
    let about = string("about")?;

    let mut env = BTreeMap::new();
    let env_obj: &Map<String, Value> = obj
        .get("env")
        .and_then(Value::as_object)
        .ok_or_else(|| ctx("env must be an object".into()))?;
    let dir = corpus_dir
        .to_str()
        .ok_or_else(|| ctx("corpus path is not UTF-8".into()))?;
    for (k, spec) in env_obj {
        let raw = bytes(spec).map_err(|e| ctx(format!("env.{k}: {e}")))?;
        // Substituted on the bytes so hex values are left exactly as written.
        let value = match String::from_utf8(raw) {
            Ok(s) => s.replace(CORPUS_DIR_PLACEHOLDER, dir).into_bytes(),
            Err(e) => e.into_bytes(),
        };
        env.insert(k.clone(), OsString::from_vec(value));
    }

    let stdin = match (obj.get("stdin"), obj.get("stdin_json")) {
        (Some(spec), None) => bytes(spec).map_err(|e| ctx(format!("stdin: {e}")))?,
        (None, Some(doc)) => serde_json::to_vec(doc).map_err(|e| ctx(e.to_string()))?,
        _ => return Err(ctx("exactly one of stdin and stdin_json is required".into())),
    };

    let expect_code = obj
        .get("expect_code")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ctx("expect_code must be a non-negative integer".into()))?;
    let expect_in_msg = match obj.get("expect_in_msg") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(ctx("expect_in_msg must be a non-empty string".into())),
    };
    if expect_code != 0 && expect_in_msg.is_none() {
        return Err(ctx("an error case needs expect_in_msg".into()));
    }
    let binary_must_fail = match obj.get("binary_must_fail") {
        None => expect_code != 0,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ctx("binary_must_fail must be a boolean".into())),
    };
    if expect_code != 0 && !binary_must_fail {
        return Err(ctx(
            "binary_must_fail cannot be false for an error case".into()
        ));
    }
    Ok(Case {
        file: file.to_owned(),
        name,
        about,
        env,
        stdin,
        expect_code,
        expect_in_msg,
        binary_must_fail,
    })
}

/// A byte-string spec: a string (its UTF-8 bytes), `{"hex": "..."}`, `{"repeat": SPEC,
/// "times": N}`, or a list of specs concatenated.
pub fn bytes(spec: &Value) -> Result<Vec<u8>, String> {
    let out = match spec {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                out.extend(bytes(p)?);
                check_size(out.len())?;
            }
            out
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("hex") => {
            let h = o["hex"].as_str().ok_or("hex must be a string")?;
            hex(h)?
        }
        Value::Object(o) if o.len() == 2 && o.contains_key("repeat") && o.contains_key("times") => {
            let unit = bytes(&o["repeat"])?;
            let times = o["times"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or("times must be a non-negative integer")?;
            check_size(unit.len().saturating_mul(times))?;
            unit.repeat(times)
        }
        other => return Err(format!("not a byte-string spec: {other}")),
    };
    check_size(out.len())?;
    Ok(out)
}

fn check_size(n: usize) -> Result<(), String> {
    if n > MAX_EXPANDED {
        return Err(format!("expands to {n} bytes, more than {MAX_EXPANDED}"));
    }
    Ok(())
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))
        })
        .collect()
}
