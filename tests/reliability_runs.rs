//! Trust at the edges of a run: bad data files, bad checkpoints, tensors of
//! the wrong shape handed to the library, run directories shared or
//! interrupted, values that go non-finite, samplers at the walls of their
//! box. Each test feeds the failure in and checks the error (exit code,
//! message naming the place) and that nothing half-written is left behind.

use ebmc::backend::{DeviceKind, Quantity, Sampler};
use ebmc::tensor::{HostTensor, Tensors};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ebmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ebmc runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebmc-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file and folder under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A small RBM on 4 binary units whose data comes from `data.csv` beside it.
const RBM: &str = "model m {
    visible v : binary[4];
    hidden h : binary[2];
    param W : real[4, 2] = normal(0, 0.1);
    param b : real[4] = zeros;
    energy e = -(v @ W @ h) - b @ v;
}
train m { data = csv(path: \"data.csv\") -> v; objective = cd(k: 1); optimizer = sgd(lr: 0.1); batch = 2; epochs = 3; seed = 5; }
";

const ROWS: &str = "1,0,1,0\n0,1,0,1\n1,1,0,0\n0,0,1,1\n";

/// The RBM and its data in `dir`; returns the model's path.
fn rbm_in(dir: &Path, data: &str) -> String {
    std::fs::write(dir.join("m.ebm"), RBM).unwrap();
    std::fs::write(dir.join("data.csv"), data).unwrap();
    dir.join("m.ebm").to_string_lossy().into_owned()
}

fn setup(src: &str) -> (ebmc::analysis::program::Model, ebmc::analysis::plan::Plan, Tensors) {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let model = c.program.models.values().next().unwrap().clone();
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(&model).params, 0);
    (model, plans[0].clone(), params)
}

fn rows(pairs: &[(&str, Vec<usize>, f32)]) -> Tensors {
    pairs.iter().map(|(k, shape, v)| (k.to_string(), HostTensor::filled(shape.clone(), *v))).collect()
}

// ---- 3. the library refuses tensors of the wrong shape -----------------------

#[test]
fn backend_entry_points_refuse_rows_of_the_wrong_shape() {
    let (model, plan, params) = setup(RBM);
    let sampler = Sampler::new(&model, &plan, &params, 3, 0, DeviceKind::Cpu).unwrap();
    let good = rows(&[("v", vec![5, 4], 1.0), ("h", vec![5, 2], 0.0)]);
    assert_eq!(sampler.energy(&good).unwrap().len(), 5);
    let narrow = rows(&[("v", vec![5, 3], 1.0), ("h", vec![5, 2], 0.0)]);
    let err = sampler.energy(&narrow).unwrap_err();
    assert!(err.contains("`v` have shape [5, 3], the model needs [5, 4]"), "{err}");
    let err = sampler.energy(&rows(&[("v", vec![5, 4], 1.0)])).unwrap_err();
    assert!(err.contains("no values for the variable `h`"), "{err}");
    let err = sampler.energy(&rows(&[("v", vec![5, 4], 1.0), ("h", vec![4, 2], 0.0)])).unwrap_err();
    assert!(err.contains("rows"), "{err}");
    // A quantity needs only the variables it reads: p(h | v) reads v.
    assert_eq!(
        sampler.evaluate(Quantity::Conditional("h".into()), &rows(&[("v", vec![5, 4], 1.0)])).unwrap().shape,
        vec![5, 2]
    );
    assert!(sampler.evaluate(Quantity::Conditional("h".into()), &rows(&[("v", vec![5, 5], 1.0)])).is_err());
    assert!(sampler.evaluate(Quantity::FreeEnergy, &rows(&[("v", vec![2, 8], 1.0)])).is_err());
    assert!(sampler.evaluate(Quantity::Gradient("nope".into()), &good).unwrap_err().contains("not a variable"));
    // A tensor whose data disagrees with its shape.
    let mut lying = good.clone();
    lying.get_mut("v").unwrap().data.pop();
    assert!(sampler.energy(&lying).unwrap_err().contains("holds 19 values"));

    let err = ebmc::backend::free_energy(
        &model,
        &ebmc::ir::program_to_ir(&model),
        &params,
        &["h".into()],
        &narrow,
        DeviceKind::Cpu,
    )
    .unwrap_err();
    assert!(err.contains("[5, 3]"), "{err}");
    assert!(
        ebmc::backend::free_energy(
            &model,
            &ebmc::ir::program_to_ir(&model),
            &params,
            &["h".into()],
            &rows(&[("h", vec![5, 2], 0.0)]),
            DeviceKind::Cpu
        )
        .is_err()
    );
    assert_eq!(
        ebmc::backend::free_energy(
            &model,
            &ebmc::ir::program_to_ir(&model),
            &params,
            &["h".into()],
            &rows(&[("v", vec![5, 4], 1.0)]),
            DeviceKind::Cpu
        )
        .unwrap()
        .len(),
        5
    );
}

#[test]
fn sampler_state_and_parameters_are_checked() {
    let (model, plan, params) = setup(RBM);
    let mut sampler = Sampler::new(&model, &plan, &params, 3, 0, DeviceKind::Cpu).unwrap();
    assert!(sampler.set_state(&rows(&[("v", vec![3, 4], 1.0), ("h", vec![3, 2], 0.0)])).is_ok());
    assert!(
        sampler.set_state(&rows(&[("v", vec![2, 4], 1.0), ("h", vec![2, 2], 0.0)])).unwrap_err().contains("3 chains")
    );
    assert!(sampler.set_state(&rows(&[("v", vec![3, 5], 1.0), ("h", vec![3, 2], 0.0)])).is_err());
    assert!(
        sampler.set_state(&rows(&[("v", vec![3, 4], f32::NAN), ("h", vec![3, 2], 0.0)])).unwrap_err().contains("NaN")
    );

    let mut wide = params.clone();
    wide.insert("W".into(), HostTensor::filled(vec![5, 2], 0.0));
    let err = Sampler::new(&model, &plan, &wide, 3, 0, DeviceKind::Cpu).err().unwrap();
    assert!(err.contains("`W` has shape [5, 2], the model declares [4, 2]"), "{err}");
    let mut nan = params.clone();
    nan.get_mut("b").unwrap().data[2] = f32::NAN;
    let err = Sampler::new(&model, &plan, &nan, 3, 0, DeviceKind::Cpu).err().unwrap();
    assert!(err.contains("parameter `b` is NaN at index [2]"), "{err}");
    let err = ebmc::backend::free_energy(
        &model,
        &ebmc::ir::program_to_ir(&model),
        &wide,
        &["h".into()],
        &rows(&[("v", vec![5, 4], 1.0)]),
        DeviceKind::Cpu,
    )
    .unwrap_err();
    assert!(err.contains("`W` has shape [5, 2]"), "{err}");
    let mut missing = params.clone();
    missing.remove("b");
    assert!(
        ebmc::backend::free_energy(
            &model,
            &ebmc::ir::program_to_ir(&model),
            &missing,
            &["h".into()],
            &rows(&[("v", vec![5, 4], 1.0)]),
            DeviceKind::Cpu
        )
        .unwrap_err()
        .contains("no value for the parameter `b`")
    );
    // Checkpoints are also refused for tensors the model does not declare.
    let mut extra = params.clone();
    extra.insert("V".into(), HostTensor::filled(vec![1], 0.0));
    assert!(matches!(
        ebmc::runtime::train::check_model_params(&model, &extra),
        Err(ebmc::tensor::ShapeError::UnknownParameter { .. })
    ));
    assert!(ebmc::runtime::train::check_model_params(&model, &params).is_ok());
}

#[test]
fn training_steps_refuse_batches_of_the_wrong_shape() {
    let c = ebmc::compile(RBM).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = &c.program.models["m"];
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 0);
    let mut trainer = ebmc::backend::Trainer::new(
        model,
        &plans[0],
        &c.program.trains["m"],
        &params,
        &Tensors::new(),
        1,
        DeviceKind::Cpu,
    )
    .unwrap();
    assert!(trainer.prepare(&rows(&[("v", vec![4, 4], 1.0)])).is_ok());
    assert!(trainer.prepare(&rows(&[("v", vec![4, 3], 1.0)])).is_err());
    let err = trainer.step(&rows(&[("v", vec![2, 5], 1.0)]), 0.1, 1).unwrap_err().to_string();
    assert!(err.contains("training batch") && err.contains("[2, 4]"), "{err}");
    assert!(trainer.step(&rows(&[("x", vec![2, 4], 1.0)]), 0.1, 1).unwrap_err().to_string().contains("`v`"));
    assert!(trainer.step(&rows(&[("v", vec![2, 4], 1.0)]), 0.1, 1).is_ok());
}

// ---- 1. data files: errors at file:row:column, never a panic or a lost row ---

#[test]
fn bad_data_files_are_errors_naming_the_place() {
    let dir = scratch("data");
    let model = rbm_in(&dir, ROWS);
    let out_dir = dir.join("run");
    let train_on = |name: &str, bytes: &[u8]| {
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        ebmc(&["train", &model, "--data", file.to_str().unwrap(), "--epochs", "1", "--out", out_dir.to_str().unwrap()])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // A typo in the first row is not silently taken for a header.
        ("typo.csv", b"1,0,l,0\n0,1,0,1\n".to_vec(), "typo.csv:1:3: `l` is not a number"),
        ("big.csv", b"1,0,1,0\n0,1e39,0,1\n".to_vec(), "big.csv:2:2: 1e39 is past the range of 32-bit floats"),
        ("nan.csv", b"1,0,1,0\n0,1,NaN,1\n".to_vec(), "nan.csv:2:3: NaN or infinity"),
        ("short.npy", b"\x93NUMPY\x01\x00\x76\x00".to_vec(), "short.npy: the file is truncated"),
        ("ten.npy", b"\x93NUMPY\x02\x00\x76\x00".to_vec(), "ten.npy: the file is truncated"),
        (
            "bad.idx",
            vec![0, 0, 8, 2, 0, 0, 0, 9, 0, 0, 0, 4, 1, 0],
            "bad.idx: the header's dimensions [9, 4] need 36 bytes of data, the file holds 2",
        ),
    ];
    for (name, bytes, says) in cases {
        let out = train_on(name, &bytes);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{name}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
        assert!(!out_dir.exists(), "{name}: nothing is written for bad data");
    }
    // A byte-order mark before a data row keeps the row (4 rows, not 3).
    let out = train_on("bom.csv", format!("\u{feff}{ROWS}").as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("on 4 rows"), "{}", stderr(&out));
    // A file that is not there: the command could not run (2).
    let out = ebmc(&[
        "train",
        &model,
        "--data",
        dir.join("absent.csv").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("absent.csv"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generated_and_bundled_data_refuse_sizes_that_do_not_fit() {
    let dir = scratch("gen");
    let cases = [
        // The digits are 64 pixels: 32 or 65 units do not fit.
        (
            "model m { visible x : binary[32]; param b : real[32] = zeros; energy e = -(b @ x); } train m { data = digits(binarize: 8) -> x; objective = pl; }",
            "digits (bundled) holds rows of shape [8, 8]; `x` is declared binary[32]",
        ),
        (
            "model m { visible x : binary[65]; param b : real[65] = zeros; energy e = -(b @ x); } train m { data = digits(binarize: 8) -> x; objective = pl; }",
            "`x` is declared binary[65]",
        ),
        (
            "model m { visible x : binary[64]; visible y : binary[2]; param b : real[64] = zeros; energy e = -(b @ x) - sum(y); } train m { data = digits(binarize: 8) -> (x, y); objective = pl; }",
            "holds one label per row; `y` is declared binary[2]",
        ),
        // 2^70 bars-and-stripes images do not exist in memory.
        (
            "model m { visible v : binary[4900]; param b : real[4900] = zeros; energy e = -(b @ v); } train m { data = bars_and_stripes(size: 70) -> v; objective = pl; }",
            "sizes from 2 to 12",
        ),
    ];
    for (i, (src, says)) in cases.iter().enumerate() {
        let file = dir.join(format!("m{i}.ebm"));
        std::fs::write(&file, src).unwrap();
        let out = ebmc(&["train", file.to_str().unwrap(), "--epochs", "1", "--out", dir.join("run").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{src}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{src}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- 2. checkpoints are checked against the model by every command ----------

#[test]
fn every_command_refuses_a_checkpoint_of_another_model() {
    let dir = scratch("ckpt");
    let model = rbm_in(&dir, ROWS);
    let run = dir.join("run");
    assert!(ebmc(&["train", &model, "--out", run.to_str().unwrap()]).status.success());
    // The same model with a wider hidden layer.
    let wider = dir.join("wider.ebm");
    std::fs::write(&wider, RBM.replace("binary[2]", "binary[3]").replace("real[4, 2]", "real[4, 3]")).unwrap();
    let data = dir.join("data.csv");
    let commands: [Vec<&str>; 4] = [
        vec!["sample", wider.to_str().unwrap(), "--params", run.to_str().unwrap(), "--steps", "1"],
        vec!["eval", wider.to_str().unwrap(), "--params", run.to_str().unwrap()],
        vec!["energy", wider.to_str().unwrap(), "--params", run.to_str().unwrap(), "--data", data.to_str().unwrap()],
        vec!["train", wider.to_str().unwrap(), "--resume", run.to_str().unwrap()],
    ];
    for args in &commands {
        let out = ebmc(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("[4, 2]") || err.contains("different model"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // NaN in a checkpoint is named, not sampled from.
    let file = run.join("epoch-3").join("params.safetensors");
    let mut params = ebmc::tensor::load_safetensors(&file).unwrap();
    params.get_mut("W").unwrap().data[5] = f32::NAN;
    let bad = dir.join("nan.safetensors");
    ebmc::tensor::save_safetensors(&bad, &params).unwrap();
    for cmd in ["sample", "eval"] {
        let out = ebmc(
            &[cmd, &model, "--params", bad.to_str().unwrap(), "--steps", "1"]
                .into_iter()
                .filter(|a| cmd == "sample" || (*a != "--steps" && *a != "1"))
                .collect::<Vec<_>>(),
        );
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("parameter `W` is NaN at index [2, 1]"), "{cmd}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- 4. run directories: locked, atomic, validated up front ------------------

#[test]
fn a_second_run_into_a_locked_directory_exits_2_naming_the_holder() {
    let dir = scratch("lock");
    let model = rbm_in(&dir, ROWS);
    let run = dir.join("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(["train", &model, "--epochs", "1000000", "--out", run.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let started = std::time::Instant::now();
    while !run.join("latest").exists() {
        assert!(started.elapsed().as_secs() < 60, "the first run never wrote a checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = ebmc(&["train", &model, "--epochs", "2", "--out", run.to_str().unwrap()]);
    let resumed = ebmc(&["train", &model, "--epochs", "2", "--resume", run.to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    for out in [second, resumed] {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("process {pid} holds its lock")) && err.contains("lock`"), "{err}");
    }
    // A killed holder's lock is released with it: the run resumes.
    let done = ebmc::runtime::train::checkpoint_meta(&run).unwrap().epoch;
    let out = ebmc(&["train", &model, "--resume", run.to_str().unwrap(), "--epochs", &(done + 1).to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ebmc::runtime::train::checkpoint_meta(&run).unwrap().epoch, done + 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_keeps_the_seed_of_the_first_run() {
    let dir = scratch("seed");
    let model = rbm_in(&dir, ROWS);
    let (whole, part) = (dir.join("whole"), dir.join("part"));
    assert!(
        ebmc(&["train", &model, "--seed", "11", "--epochs", "4", "--out", whole.to_str().unwrap()]).status.success()
    );
    assert!(
        ebmc(&["train", &model, "--seed", "11", "--epochs", "2", "--out", part.to_str().unwrap()]).status.success()
    );
    let out = ebmc(&["train", &model, "--seed", "12", "--epochs", "4", "--resume", part.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("started with seed 11"), "{}", stderr(&out));
    // Without --seed (the train block says 5) the run goes on with 11.
    assert!(ebmc(&["train", &model, "--epochs", "4", "--resume", part.to_str().unwrap()]).status.success());
    for file in ["params.safetensors", "state.safetensors"] {
        assert_eq!(
            std::fs::read(whole.join("epoch-4").join(file)).unwrap(),
            std::fs::read(part.join("epoch-4").join(file)).unwrap(),
            "{file}"
        );
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("epoch-4/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 11);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn interrupted_clean_up_is_finished_by_the_next_run_and_nothing_partial_is_read() {
    let dir = scratch("trash");
    let model = rbm_in(&dir, ROWS);
    let run = dir.join("run");
    assert!(ebmc(&["train", &model, "--epochs", "5", "--out", run.to_str().unwrap()]).status.success());
    assert_eq!(
        listing(&run).iter().filter(|p| !p.contains('/')).cloned().collect::<Vec<_>>(),
        ["curve.png", "epoch-4", "epoch-5", "latest", "lock", "metrics.jsonl", "samples.png"]
    );
    // What kills at each stage leave behind: a staging folder, an old
    // checkpoint renamed for deletion, a temporary file.
    for leftover in [".epoch-6.partial", ".trash-epoch-3-77"] {
        std::fs::create_dir_all(run.join(leftover)).unwrap();
        std::fs::write(run.join(leftover).join("params.safetensors"), b"half").unwrap();
    }
    std::fs::write(run.join("metrics.jsonl.tmp"), b"{\"epo").unwrap();
    assert!(ebmc(&["train", &model, "--epochs", "6", "--resume", run.to_str().unwrap()]).status.success());
    let names = listing(&run);
    assert!(!names.iter().any(|n| n.contains(".partial") || n.contains(".trash-") || n.ends_with(".tmp")), "{names:?}");
    for epoch in ["epoch-5", "epoch-6"] {
        for file in ["meta.json", "params.safetensors", "state.safetensors"] {
            assert!(run.join(epoch).join(file).is_file(), "{epoch}/{file}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_are_checked_before_any_work_and_zero_epochs_write_nothing() {
    let dir = scratch("outputs");
    let model = rbm_in(&dir, ROWS);
    // A billion sweeps would take hours: the bad name must be refused first.
    let started = std::time::Instant::now();
    for (out, says) in [("--out", "x.txt"), ("--out", "no/such/dir/x.csv"), ("--png", "x.jpg")] {
        let target = dir.join(says);
        let o = ebmc(&["sample", &model, "--steps", "1000000000", out, target.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    assert!(started.elapsed().as_secs() < 30);
    assert_eq!(listing(&dir), ["data.csv", "m.ebm"]);
    let run = dir.join("run");
    let o = ebmc(&["train", &model, "--epochs", "0", "--out", run.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!run.join("metrics.jsonl").exists() && !run.join("curve.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_writes_leave_no_temporary_files() {
    let dir = scratch("writes");
    // Renaming onto a folder that holds files fails after the temporary file is written.
    std::fs::create_dir_all(dir.join("taken").join("inside")).unwrap();
    assert!(ebmc::tensor::write_atomically(&dir.join("taken"), b"bytes").is_err());
    assert!(ebmc::tensor::write_atomically(&dir.join("absent").join("f"), b"bytes").is_err());
    assert!(ebmc::tensor::save_safetensors(&dir.join("taken"), &rows(&[("x", vec![2], 1.0)])).is_err());
    assert_eq!(listing(&dir), ["taken", "taken/inside"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- 5 and 6. samplers: inside their box, finite or an error -----------------

/// The Kolmogorov-Smirnov distance between `xs` and the CDF `cdf`.
fn ks(mut xs: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    xs.iter().enumerate().map(|(i, &x)| (cdf(x) - i as f64 / n).max((i + 1) as f64 / n - cdf(x))).fold(0.0, f64::max)
}

#[test]
fn bounded_reals_stay_in_their_box_and_are_uniform_under_a_flat_energy() {
    // With a flat energy the walk is pure noise, folded into the box; steps
    // from a tenth of the box to many boxes wide must all give a uniform
    // sample. 4000 independent chains: the KS critical value at α = 0.001
    // is 1.95/√4000 = 0.031.
    for (lo, hi, step) in [(0.0, 1.0, 0.005), (0.0, 1.0, 0.5), (-2.0, 3.0, 50.0)] {
        let src = format!(
            "model u {{ visible x : real[2] in [{lo}, {hi}]; energy e = 0 * sum(x); sample {{ x: langevin(step: {step}); }} }}"
        );
        let (model, plan, params) = setup(&src);
        let mut sampler = Sampler::new(&model, &plan, &params, 4000, 3, DeviceKind::Cpu).unwrap();
        for _ in 0..40 {
            sampler.sweep();
        }
        let xs: Vec<f64> = sampler.state()["x"].data.iter().map(|&v| f64::from(v)).collect();
        assert!(xs.iter().all(|x| (lo..=hi).contains(x)), "step {step}: a sample left [{lo}, {hi}]");
        let first: Vec<f64> = xs.iter().step_by(2).copied().collect();
        let d = ks(first, |x| (x - lo) / (hi - lo));
        assert!(d < 0.031, "step {step}: KS distance {d} from uniform");
    }
}

#[test]
fn bounded_reals_follow_a_truncated_exponential() {
    // E = 3x on [0, 1]: density 3 e^{-3x} / (1 - e^{-3}). MALA with small
    // steps corrects the discretisation; 4000 chains, α = 0.001: 0.031.
    let src =
        "model t { visible x : real in [0, 1]; energy e = 3 * x; sample { x: langevin(step: 0.002, steps: 5); } }";
    let (model, plan, params) = setup(src);
    let mut sampler = Sampler::new(&model, &plan, &params, 4000, 5, DeviceKind::Cpu).unwrap();
    for _ in 0..400 {
        sampler.sweep();
    }
    let xs: Vec<f64> = sampler.state()["x"].data.iter().map(|&v| f64::from(v)).collect();
    let d = ks(xs, |x| (1.0 - (-3.0 * x).exp()) / (1.0 - (-3.0f64).exp()));
    assert!(d < 0.031, "KS distance {d}");
}

#[test]
fn mala_with_steps_as_wide_as_the_box_is_exact() {
    // MALA's acceptance uses the folded proposal's density (a sum over the
    // reflected images), so even steps that cross both walls leave the
    // truncated exponential exactly invariant. Same test and bound as above.
    for step in [0.3, 3.0] {
        let src = format!(
            "model t {{ visible x : real in [0, 1]; energy e = 3 * x; sample {{ x: mala(step: {step}, steps: 5); }} }}"
        );
        let (model, plan, params) = setup(&src);
        let mut sampler = Sampler::new(&model, &plan, &params, 4000, 6, DeviceKind::Cpu).unwrap();
        for _ in 0..100 {
            sampler.sweep();
        }
        let xs: Vec<f64> = sampler.state()["x"].data.iter().map(|&v| f64::from(v)).collect();
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        let d = ks(xs, |x| (1.0 - (-3.0 * x).exp()) / (1.0 - (-3.0f64).exp()));
        assert!(d < 0.031, "step {step}: KS distance {d}, acceptance {:?}", sampler.acceptance());
    }
}

#[test]
fn diverging_samples_are_an_error_not_nan_rows() {
    let dir = scratch("diverge");
    // x ← x − 5x + noise multiplies x by −4 each step: past f32 in ~64 steps.
    let file = dir.join("d.ebm");
    std::fs::write(
        &file,
        "model d { visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: langevin(step: 5); } }",
    )
    .unwrap();
    let csv = dir.join("s.csv");
    let out =
        ebmc(&["sample", file.to_str().unwrap(), "--steps", "200", "--chains", "3", "--out", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sampling diverged: `x` of chain 1"), "{}", stderr(&out));
    assert!(!csv.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- 7. nce.log_z is log Z ---------------------------------------------------

#[test]
fn nce_learns_the_exact_log_z_of_a_gaussian() {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    // E = x² / (2σ²) with σ = 0.5: Z = σ √(2π), log Z = 0.2258. With data
    // from that Gaussian the energy is exact and NCE fits c alone; its
    // standard error with 5000 rows and ratio 4 is about √(1.25 / 5000) =
    // 0.016, so 0.06 is four of them, far below the log 4 = 1.39 that the
    // noise ratio added before.
    let dir = scratch("nce");
    let sigma: f64 = 0.5;
    let normal = rand_distr::Normal::new(0.0, sigma).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let rows: String = (0..5000).map(|_| format!("{}\n", normal.sample(&mut rng))).collect();
    std::fs::write(dir.join("g.csv"), rows).unwrap();
    std::fs::write(
        dir.join("g.ebm"),
        "model g { visible x : real[1]; energy e = 2 * sum(square(x)); }
         train g { data = csv(path: \"g.csv\") -> x; objective = nce(noise: gaussian, ratio: 4); optimizer = adam(lr: 0.01); batch = 500; epochs = 30; seed = 2; }",
    )
    .unwrap();
    let run = dir.join("run");
    let out = ebmc(&["train", dir.join("g.ebm").to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let params = ebmc::tensor::load_safetensors(&run.join("epoch-30/params.safetensors")).unwrap();
    let learned = f64::from(params["nce.log_z"].data[0]);
    let exact = (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
    assert!((learned - exact).abs() < 0.06, "nce.log_z {learned} against log Z {exact}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_run_names_epoch_step_and_what_went_non_finite() {
    // 1e20 fits in f32 but its square does not: the loss overflows at once.
    let dir = scratch("overflow");
    std::fs::write(dir.join("big.csv"), "1e20\n-1e20\n3e20\n2e20\n").unwrap();
    std::fs::write(
        dir.join("q.ebm"),
        "model q { visible x : real[1]; param m : real[1] = zeros; energy e = 0.5 * sum(square(x - m)); }
         train q { data = csv(path: \"big.csv\") -> x; objective = sm; optimizer = sgd(lr: 0.1); batch = 2; epochs = 2; }",
    )
    .unwrap();
    let run = dir.join("run");
    let out = ebmc(&["train", dir.join("q.ebm").to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("training diverged at epoch 1, step 1: the loss is not finite"), "{}", stderr(&out));
    assert!(stderr(&out).contains("check the data's scale"));
    assert_eq!(listing(&run), ["lock"], "no metrics, curve or checkpoint of a run that produced no finite epoch");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Optimiser state is named so it cannot be read as a model variable, and
/// Adam's step count is a whole number in the state's metadata, not a tensor.
#[test]
fn checkpoints_name_optimizer_state_and_keep_adams_step_count_as_an_integer() {
    let dir = scratch("optimizer_state");
    let model = dir.join("m.ebm");
    std::fs::write(&model, RBM.replace("optimizer = sgd(lr: 0.1)", "optimizer = adam(lr: 0.01)")).unwrap();
    std::fs::write(dir.join("data.csv"), ROWS).unwrap();
    let run = dir.join("run");
    let out = ebmc(&["train", model.to_str().unwrap(), "--epochs", "2", "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (state, metadata) = ebmc::tensor::load_safetensors_with(&run.join("epoch-2/state.safetensors")).unwrap();
    let names: Vec<&String> = state.keys().collect();
    assert!(names.iter().any(|n| n.as_str() == "optimizer.adam.m.W"), "{names:?}");
    assert!(names.iter().any(|n| n.as_str() == "optimizer.adam.v.W"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("optimizer.adam.")), "{names:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("epoch-2/meta.json")).unwrap()).unwrap();
    let steps = meta["step"].as_u64().unwrap();
    assert!(steps > 0);
    assert_eq!(metadata.get("optimizer.adam.steps"), Some(&steps.to_string()));
    // Resuming reads the count back: two more epochs continue from it.
    let resumed = ebmc(&["train", model.to_str().unwrap(), "--epochs", "4", "--resume", run.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let (_, metadata) = ebmc::tensor::load_safetensors_with(&run.join("epoch-4/state.safetensors")).unwrap();
    assert_eq!(metadata.get("optimizer.adam.steps"), Some(&(2 * steps).to_string()));
}
