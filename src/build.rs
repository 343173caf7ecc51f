//! Checking models when a host crate is built: call [`check_models`] from
//! the host's `build.rs`, and a broken model fails the host's build with the
//! diagnostic `ebmc check` prints. Embed the checked source in the binary
//! with `include_str!` and compile it at run time with
//! [`Model::from_source`](crate::Model::from_source), which then cannot fail
//! on the source (see `examples/build_time/` and `docs/library.md`).
//!
//! ```no_run
//! // build.rs of the host crate
//! fn main() -> std::process::ExitCode {
//!     ebmc::build::check_models(&["models/coin_flips.ebm"])
//! }
//! ```

#![warn(missing_docs)]

use crate::api::Error;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Checks and plans every model of each file as `ebmc check` does, printing
/// Cargo's build-script lines on standard output: `cargo:rerun-if-changed`
/// for each file, and each diagnostic (warnings too) as `cargo:warning=`
/// lines. On an error, the rendered diagnostics also go to standard error
/// (Cargo shows it when the build fails) and the result is a failure, which
/// a build script returns from `main` to fail the build.
pub fn check_models<P: AsRef<Path>>(paths: &[P]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match check_models_to(paths, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in errors {
                let _ = writeln!(err, "{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// [`check_models`] writing the Cargo lines to `out`; the errors of every
/// file that does not compile (or cannot be read) come back.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("ebmc-build-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let file = dir.join("broken.ebm");
/// std::fs::write(&file, "model m { visible v : binary[2]; energy e = -sum(w * v); }").unwrap();
/// let mut lines = Vec::new();
/// let errors = ebmc::build::check_models_to(&[&file], &mut lines).unwrap_err();
/// let lines = String::from_utf8(lines).unwrap();
/// assert!(lines.contains("cargo:rerun-if-changed="));
/// assert!(lines.contains("cargo:warning=error[E0100]"));
/// assert_eq!(errors[0].code(), "E0100");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn check_models_to<P: AsRef<Path>>(paths: &[P], out: &mut dyn Write) -> Result<(), Vec<Error>> {
    let mut errors = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let _ = writeln!(out, "cargo:rerun-if-changed={}", path.display());
        let found = check_file(path);
        let text = match &found {
            Ok(warnings) => warnings.clone(),
            Err(e) => e.to_string(),
        };
        for line in text.lines() {
            let _ = writeln!(out, "cargo:warning={line}");
        }
        if let Err(e) = found {
            errors.push(e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Every model of the file, compiled and planned; the rendered warnings.
fn check_file(path: &Path) -> Result<String, Error> {
    let source =
        std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })?;
    let file = path.display().to_string();
    let warnings = match crate::check_source(&source) {
        Ok(warnings) => warnings,
        Err(diagnostics) => return Err(Error::Compile { file, source, diagnostics }),
    };
    // `check_source` accepts a file without models; a host embedding one needs one.
    if crate::compile(&source).is_ok_and(|c| c.program.models.is_empty()) {
        return Err(Error::Model { wanted: None, models: vec![] });
    }
    Ok(crate::front::diagnostic::render_plain(&file, &source, &warnings))
}
