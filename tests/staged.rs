//! Staged training through the `ebmc` binary: a train block's `init`
//! starts from another run's parameters, `freeze` holds some fixed, and a
//! staged run resumes from its own checkpoint.

use ebmc::tensor::{Tensors, load_safetensors};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Stage 1: a Gaussian with a small net and one tensor stage 2 does not declare.
const STAGE1: &str = r#"
model one {
    visible x : real[2];
    param mu : real[2] = zeros;
    param extra : real[3] = zeros;
    net f = mlp(2 -> 8 -> 1);
    energy q = 0.5 * sum(square(x - mu)) + 0.1 * f(x) + square(sum(extra));
}
train one {
    data = toy("moons", n: 400) -> x;
    objective = dsm(sigma: 0.1);
    optimizer = adam(lr: 0.01);
    epochs = 2;
}
"#;

/// Stage 2 shares `mu` and `f`, adds `scale`, and holds `FREEZE` fixed.
fn stage2(f_widths: &str, freeze: &str) -> String {
    format!(
        r#"
model two {{
    visible x : real[2];
    param mu : real[2] = zeros;
    param scale : real = zeros;
    net f = mlp({f_widths});
    energy q = 0.5 * exp(scale) * sum(square(x - mu)) + 0.1 * f(x);
}}
train two {{
    data = toy("moons", n: 400) -> x;
    objective = dsm(sigma: 0.1);
    optimizer = adam(lr: 0.01);
    epochs = 2;
    seed = 5;
    init = "one";
    freeze = {freeze};
}}
"#
    )
}

fn ebmc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc")).args(args).current_dir(dir).output().expect("ebmc runs")
}

/// A fresh folder holding stage 1's file and its trained run `one/`.
fn with_stage1(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("one.ebm"), STAGE1).unwrap();
    let out = ebmc(&dir, &["train", "one.ebm", "--out", "one"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn params(run: &Path) -> Tensors {
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    load_safetensors(&run.join(latest.trim()).join("params.safetensors")).unwrap()
}

fn bits(t: &ebmc::tensor::HostTensor) -> Vec<u32> {
    t.data.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn init_loads_the_shared_parameters_and_frozen_ones_stay_bit_identical() {
    let dir = with_stage1("staged-init-freeze");
    std::fs::write(dir.join("two.ebm"), stage2("2 -> 8 -> 1", "[mu]")).unwrap();
    let out = ebmc(&dir, &["train", "two.ebm", "--out", "two"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("init: 5 parameter(s) from `one/epoch-2/params.safetensors`"), "{stderr}");
    assert!(stderr.contains("init: 1 from their initialisers: `scale`"), "{stderr}");
    assert!(stderr.contains("the checkpoint's `extra`; ignored"), "{stderr}");
    assert!(stderr.contains("frozen: `mu`"), "{stderr}");
    let (one, two) = (params(&dir.join("one")), params(&dir.join("two")));
    // Held fixed: the very bits stage 1 ended with (stage 1 moved it off its zeros).
    assert_eq!(bits(&two["mu"]), bits(&one["mu"]));
    assert!(one["mu"].data.iter().any(|&x| x != 0.0));
    // Trained from stage 1's values: moved, but 8 Adam steps of at most about
    // lr = 0.01 each stay within 0.1 of them, while a fresh draw of `f.w0`
    // with stage 2's seed (std 1/sqrt(2)) would be off by about 0.8 a weight.
    let (a, b) = (&one["f.w0"].data, &two["f.w0"].data);
    assert_ne!(bits(&two["f.w0"]), bits(&one["f.w0"]));
    let gap = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(gap < 0.1, "f.w0 moved {gap} from stage 1's values");
    assert_ne!(two["scale"].data[0], 0.0, "scale is trained");
    // No optimiser state for the frozen parameter.
    let state = load_safetensors(&dir.join("two/epoch-2/state.safetensors")).unwrap();
    assert!(state.keys().all(|k| !k.ends_with(".mu")), "{:?}", state.keys().collect::<Vec<_>>());
    assert!(state.keys().any(|k| k.ends_with(".scale")), "{:?}", state.keys().collect::<Vec<_>>());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("two/epoch-2/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["options"]["init"], "one");
    assert_eq!(meta["options"]["freeze"], serde_json::json!(["mu"]));
    let plan = ebmc(&dir, &["plan", "two.ebm"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("init from \"one\""), "{text}");
    assert!(text.contains("frozen (no gradient, no optimiser state): mu\n"), "{text}");
    assert!(text.contains("trained: scale, f.w0, f.b0, f.w1, f.b1\n"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_frozen_net_keeps_every_weight() {
    let dir = with_stage1("staged-freeze-net");
    std::fs::write(dir.join("two.ebm"), stage2("2 -> 8 -> 1", "[f]")).unwrap();
    let out = ebmc(&dir, &["train", "two.ebm", "--out", "two", "--message-format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (one, two) = (params(&dir.join("one")), params(&dir.join("two")));
    for name in ["f.w0", "f.b0", "f.w1", "f.b1"] {
        assert_eq!(bits(&two[name]), bits(&one[name]), "{name}");
    }
    assert_ne!(bits(&two["mu"]), bits(&one["mu"]));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(result["frozen"], serde_json::json!(["f.w0", "f.b0", "f.w1", "f.b1"]));
    assert_eq!(result["init"]["ignored"], serde_json::json!(["extra"]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shape_mismatch_names_the_file_the_parameter_and_both_shapes_and_writes_nothing() {
    let dir = with_stage1("staged-shape");
    std::fs::write(dir.join("two.ebm"), stage2("2 -> 16 -> 1", "[mu]")).unwrap();
    let out = ebmc(&dir, &["train", "two.ebm", "--out", "two"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("one/epoch-2/params.safetensors"), "{stderr}");
    assert!(stderr.contains("`f.w0` has shape [2, 8], the model declares [2, 16]"), "{stderr}");
    assert!(!dir.join("two").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_staged_run_resumes_from_its_own_checkpoint() {
    let dir = with_stage1("staged-resume");
    std::fs::write(dir.join("two.ebm"), stage2("2 -> 8 -> 1", "[f]")).unwrap();
    let whole = ebmc(&dir, &["train", "two.ebm", "--out", "whole", "--epochs", "3"]);
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let first = ebmc(&dir, &["train", "two.ebm", "--out", "parts", "--epochs", "1"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // Gone: a resumed run must not read `init` again.
    std::fs::remove_dir_all(dir.join("one")).unwrap();
    let rest = ebmc(&dir, &["train", "two.ebm", "--resume", "parts", "--epochs", "3"]);
    let stderr = String::from_utf8_lossy(&rest.stderr);
    assert!(rest.status.success(), "{stderr}");
    assert!(!stderr.contains("init:"), "{stderr}");
    let (whole, parts) = (params(&dir.join("whole")), params(&dir.join("parts")));
    for (name, t) in &whole {
        assert_eq!(bits(t), bits(&parts[name]), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
