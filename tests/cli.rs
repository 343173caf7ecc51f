//! The `ebmc` binary as a user runs it: exit codes, where output goes, and
//! what it says.

use std::path::Path;
use std::process::{Command, Output};

fn ebmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ebmc runs")
}

fn zoo() -> Vec<String> {
    // The zoo's files and those one folder down (models/toy/).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let inner: Vec<std::path::PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect()
        } else {
            vec![path]
        };
        files.extend(
            inner
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "ebm"))
                .map(|p| p.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_string_lossy().into_owned()),
        );
    }
    files.sort();
    files
}

#[test]
fn check_is_silent_on_the_zoo() {
    let mut args = vec!["check"];
    let files = zoo();
    args.extend(files.iter().map(String::as_str));
    let out = ebmc(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // `check` runs the planner's checks too: the only word is W0401 on the
    // energies that are a bare MLP of their input (nothing confines them).
    let err = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("[W")).collect();
    assert!(warned.iter().all(|l| l.starts_with("warning[W0401]")), "{err}");
    assert_eq!(warned.len(), 8, "{err}");
    assert!(!err.contains("error"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_reports_errors_with_location_and_exit_1() {
    let out = ebmc(&["check", "tests/errors/matmul_mismatch.ebm"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[E0201]"), "{err}");
    assert!(err.contains("tests/errors/matmul_mismatch.ebm:5:25"), "{err}");
    assert!(!err.contains("\x1b["), "no colour when not on a terminal");
}

#[test]
fn check_emits_json_lines() {
    let out = ebmc(&["check", "--message-format", "json", "tests/errors/many_errors.ebm"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 4);
    assert_eq!(lines[0]["file"], "tests/errors/many_errors.ebm");
    assert_eq!(lines[0]["code"], "E0201");
    assert_eq!(lines[0]["line"], 7);
    assert!(lines.iter().any(|l| l["help"].as_str().is_some_and(|h| h.contains("momentum"))));
}

#[test]
fn unreadable_file_exits_2() {
    let out = ebmc(&["check", "no/such/file.ebm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read `no/such/file.ebm`"));
}

#[test]
fn fmt_check_passes_on_the_zoo_and_rewrites_messy_files() {
    let mut args = vec!["fmt", "--check"];
    let files = zoo();
    args.extend(files.iter().map(String::as_str));
    assert_eq!(ebmc(&args).status.code(), Some(0));

    let dir = std::env::temp_dir().join(format!("ebmc-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("messy.ebm");
    std::fs::write(&file, "model m{visible v:binary[2];energy e=sum(v);}").unwrap();
    let path = file.to_str().unwrap();
    let out = ebmc(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not formatted"));
    assert_eq!(ebmc(&["fmt", path]).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "model m {\n    visible v : binary[2];\n    energy e = sum(v);\n}\n"
    );
    assert_eq!(ebmc(&["fmt", "--check", path]).status.code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fmt_refuses_files_with_syntax_errors() {
    let out = ebmc(&["fmt", "--check", "tests/errors/syntax_missing_semicolon.ebm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("E0001"));
}

#[test]
fn sample_runs_on_every_zoo_model_and_draws_image_grids() {
    let dir = std::env::temp_dir().join(format!("ebmc-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in zoo() {
        // A file of several models (a staged run's stages) is sampled model by model.
        let source = std::fs::read_to_string(&file).unwrap();
        let models: Vec<&str> =
            source.lines().filter_map(|l| l.strip_prefix("model ")?.split_whitespace().next()).collect();
        for model in &models {
            let csv = dir.join(format!("{model}.csv"));
            let mut args =
                vec!["sample", &file, "--chains", "4", "--steps", "3", "--seed", "1", "--out", csv.to_str().unwrap()];
            if models.len() > 1 {
                args.extend(["--model", model]);
            }
            let out = ebmc(&args);
            assert_eq!(out.status.code(), Some(0), "{file} {model}: {}", String::from_utf8_lossy(&out.stderr));
            let text = std::fs::read_to_string(&csv).unwrap();
            assert_eq!(text.lines().count(), 5, "{file} {model}: header and one row per chain");
        }
    }
    for image_model in ["models/rbm.ebm", "models/ising.ebm", "models/potts.ebm"] {
        let png = dir.join("grid.png");
        let out = ebmc(&["sample", image_model, "--chains", "9", "--steps", "2", "--png", png.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{image_model}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }
    let npy = dir.join("s.npy");
    assert_eq!(
        ebmc(&["sample", "models/bars.ebm", "--chains", "2", "--steps", "1", "--out", npy.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(&std::fs::read(&npy).unwrap()[..6], b"\x93NUMPY");
    // Same seed, same samples.
    let a = ebmc(&[
        "sample",
        "models/bars.ebm",
        "--chains",
        "3",
        "--steps",
        "5",
        "--seed",
        "4",
        "--out",
        dir.join("a.csv").to_str().unwrap(),
    ]);
    let b = ebmc(&[
        "sample",
        "models/bars.ebm",
        "--chains",
        "3",
        "--steps",
        "5",
        "--seed",
        "4",
        "--out",
        dir.join("b.csv").to_str().unwrap(),
    ]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(std::fs::read(dir.join("a.csv")).unwrap(), std::fs::read(dir.join("b.csv")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A PNG's width and height, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn sample_draws_chains_over_time_beside_an_image_grid() {
    let dir = std::env::temp_dir().join(format!("ebmc-chains-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("digits.png");
    let args = ["sample", "models/rbm.ebm", "--chains", "9", "--steps", "40", "--png", png.to_str().unwrap()];
    let out = ebmc(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let chains = dir.join("chains.png");
    assert!(stdout.contains(&format!("wrote 9 images of v (8x8) to {}", png.display())), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote 8 chains of v at 10 sweeps (1 to 40) to {}", chains.display())),
        "{stdout}"
    );
    // 8x8 digits at 6 pixels a value make 48-pixel cells, 2 pixels apart
    // and from the edge: 9 chains as 3x3, then 8 chains (rows) by 10 sweeps.
    assert_eq!(png_size(&png), (3 * 50 + 2, 3 * 50 + 2));
    assert_eq!(png_size(&chains), (10 * 50 + 2, 8 * 50 + 2));
    // The same files in JSON; a short run has as many snapshots as sweeps, and
    // a final grid named chains.png leaves its name to itself.
    std::fs::remove_file(&chains).unwrap();
    let own = dir.join("chains.png");
    let json = ebmc(&[
        "sample",
        "models/rbm.ebm",
        "--chains",
        "4",
        "--steps",
        "3",
        "--png",
        own.to_str().unwrap(),
        "--message-format",
        "json",
    ]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let result: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let beside = dir.join("chains-chains.png");
    assert_eq!(result["picture"]["path"], own.to_str().unwrap(), "{result}");
    assert_eq!((&result["picture"]["size"], &result["picture"]["channels"]), (&serde_json::json!([8, 8]), &1.into()));
    let c = &result["chains_picture"];
    assert_eq!(c["path"], beside.to_str().unwrap(), "{result}");
    assert_eq!((&c["variable"], &c["chains"], &c["sweeps"]), (&"v".into(), &4.into(), &serde_json::json!([1, 2, 3])));
    assert_eq!(png_size(&own), (2 * 50 + 2, 2 * 50 + 2));
    assert_eq!(png_size(&beside), (3 * 50 + 2, 4 * 50 + 2));
    // An unbounded real is shaded by its samples' range, and says so for each picture.
    let grey = dir.join("grey.ebm");
    std::fs::write(&grey, "model grey { visible x : real[16]; energy e = 0.5 * sum(square(x)); }\n").unwrap();
    let out = ebmc(&["sample", grey.to_str().unwrap(), "--steps", "2", "--png", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for file in [&png, &dir.join("chains.png")] {
        let note = format!("note: `x` is an unbounded real; {} shades its sampled range ", file.display());
        assert!(stderr.contains(&note), "{stderr}");
    }
    // 4x4 images at 12 pixels a value: 64 chains as 8x8, and 8 chains by 2 sweeps.
    assert_eq!(png_size(&png), (8 * 50 + 2, 8 * 50 + 2));
    assert_eq!(png_size(&dir.join("chains.png")), (2 * 50 + 2, 8 * 50 + 2));
    // A density picture has no chains over time.
    let ring = ebmc(&["sample", "models/ring.ebm", "--chains", "5", "--steps", "2", "--png", png.to_str().unwrap()]);
    assert!(ring.status.success(), "{}", String::from_utf8_lossy(&ring.stderr));
    assert!(
        !String::from_utf8_lossy(&ring.stdout).contains("sweeps (1 to"),
        "{}",
        String::from_utf8_lossy(&ring.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_draws_2d_models_over_their_density_and_refuses_other_shapes() {
    let dir = std::env::temp_dir().join(format!("ebmc-density-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("ring.png");
    let out = ebmc(&["sample", "models/ring.ebm", "--chains", "50", "--steps", "2", "--png", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("over the model's density"));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let three = dir.join("three.ebm");
    std::fs::write(&three, "model three { visible x : real[3]; energy e = 0.5 * sum(square(x)); }\n").unwrap();
    let out =
        ebmc(&["sample", three.to_str().unwrap(), "--steps", "1", "--png", dir.join("never.png").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image HxW"));
    assert!(!dir.join("never.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_finishes_cleanly_on_a_model_with_no_picture() {
    // JEM's label is not summed out of its plan, so there is no density to draw.
    let dir = std::env::temp_dir().join(format!("ebmc-jem-{}", std::process::id()));
    let out = ebmc(&["train", "models/jem.ebm", "--epochs", "1", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("samples.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lattice_coupling_folded_to_zero_samples_uniform_spins() {
    // `0 * J * (s @ A @ s)` simplifies away: chromatic Gibbs then has zero logits, not a panic.
    let dir = std::env::temp_dir().join(format!("ebmc-cli-zero-coupling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("zero.ebm");
    std::fs::write(&model, "model m {\n    const A = triangular(6, 6, periodic: true);\n    visible s : spin[36];\n    param J : real = -0.2;\n    energy coupling = -0 * J * (s @ A @ s);\n}\n").unwrap();
    let samples = dir.join("s.csv");
    let out = ebmc(&[
        "sample",
        model.to_str().unwrap(),
        "--chains",
        "200",
        "--steps",
        "5",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&samples).unwrap();
    let values: Vec<f64> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').filter_map(|x| x.parse::<f64>().ok()).collect::<Vec<_>>())
        .collect();
    assert!(values.iter().all(|v| *v == 1.0 || *v == -1.0), "spins are ±1");
    // Uniform spins: the mean of n = 7,200+ draws is within 4 standard errors of 0.
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(mean.abs() < 4.0 / (values.len() as f64).sqrt(), "mean {mean} over {} spins", values.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_of_0_1_values_is_refused_under_binarize_and_read_as_it_is_with_data_as_is() {
    // Samples of rbm.ebm are 0/1 already: its `binarize: 8` would make every
    // row all zeros, so ebmc says so, and `--data-as-is` reads them unchanged.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-data-as-is");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = ebmc::Model::from_file("models/rbm.ebm").unwrap();
    let params = model.init_params(5);
    model.save(dir.join("run"), &params).unwrap();
    let bits: Vec<f32> = (0..3 * 64).map(|i| ((i * 5) % 3 == 0) as u8 as f32).collect();
    let header: Vec<String> = (0..64).map(|i| format!("v{i}")).collect();
    let lines: Vec<String> =
        bits.chunks(64).map(|r| r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).collect();
    let samples = dir.join("samples.csv");
    std::fs::write(&samples, format!("{}\n{}\n", header.join(","), lines.join("\n"))).unwrap();
    let run = dir.join("run");
    let args = ["energy", "models/rbm.ebm", "--params", run.to_str().unwrap(), "--data", samples.to_str().unwrap()];
    let refused = ebmc(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("samples.csv") && stderr.contains("binarize: 8") && stderr.contains("--data-as-is"),
        "{stderr}"
    );
    let out = ebmc(&[&args[..], &["--data-as-is"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let expected = model.free_energy(&params, &ebmc::Rows::new().with("v", bits, &[3, 64]).unwrap()).unwrap();
    assert_eq!(printed.len(), 3);
    for (p, e) in printed.iter().zip(&expected) {
        assert!((p - e).abs() <= 1e-9 * e.abs().max(1.0), "{p} vs {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_file_is_read_with_the_train_blocks_binarize_and_scale() {
    // rbm.ebm trains on `digits(binarize: 8)`: a CSV of raw 0-16 pixel
    // intensities given with `--data` is thresholded the same way.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-data-value-options");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = ebmc::Model::from_file("models/rbm.ebm").unwrap();
    let params = model.init_params(5);
    model.save(dir.join("run"), &params).unwrap();
    let raw: Vec<f32> = (0..3 * 64).map(|i| ((i * 7) % 17) as f32).collect();
    let header: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
    let lines: Vec<String> =
        raw.chunks(64).map(|r| r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).collect();
    let pix = dir.join("pix.csv");
    std::fs::write(&pix, format!("{}\n{}\n", header.join(","), lines.join("\n"))).unwrap();
    let out = ebmc(&[
        "energy",
        "models/rbm.ebm",
        "--params",
        dir.join("run").to_str().unwrap(),
        "--data",
        pix.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let printed: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let binarised: Vec<f32> = raw.iter().map(|&x| f32::from(u8::from(x >= 8.0))).collect();
    let rows = ebmc::Rows::new().with("v", binarised, &[3, 64]).unwrap();
    let expected = model.free_energy(&params, &rows).unwrap();
    assert_eq!(printed.len(), 3);
    for (p, e) in printed.iter().zip(&expected) {
        assert!((p - e).abs() <= 1e-9 * e.abs().max(1.0), "{p} vs {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_relative_data_path_is_read_from_the_working_directory() {
    // `--data rows.csv` names a file where the user is, not beside the model file.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-data-cwd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = ebmc::Model::from_file("models/bars.ebm").unwrap();
    model.save(dir.join("run"), &model.init_params(1)).unwrap();
    let row: Vec<String> = (0..16).map(|i| (i % 2).to_string()).collect();
    std::fs::write(dir.join("rows.csv"), format!("{}\n", row.join(","))).unwrap();
    let bars = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bars.ebm");
    let out = Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(["energy", bars.to_str().unwrap(), "--params", "run", "--data", "rows.csv"])
        .current_dir(&dir)
        .output()
        .expect("ebmc runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_prints_the_compiled_schedules_of_every_zoo_model() {
    for file in zoo() {
        let out = ebmc(&["plan", "--schedule", &file]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("training step, phase 1 of"), "{file}: no training step listed\n{text}");
        assert!(text.contains("gemm") || text.contains("fused"), "{file}: an empty schedule\n{text}");
    }
    let out = ebmc(&["plan", "--schedule", "models/toy/8gaussians_pcd.ebm", "--message-format", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let steps: Vec<&str> =
        value["schedules"].as_array().expect("schedules").iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert!(steps.iter().any(|s| s.starts_with("Langevin step")), "{steps:?}");
    assert_eq!(steps.iter().filter(|s| s.starts_with("training step")).count(), 2, "{steps:?}");
}
