//! Checkpoints describe themselves: safetensors metadata and `meta.json`
//! let a reader without ebmc rebuild the model (the Python snippet of
//! docs/checkpoints.md is run against ebmc's own free energy), and a
//! checkpoint from before the schema is refused by name.

use ebmc::backend::DeviceKind;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebmc-checkpoints-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Trains `models/rbm.ebm` for one epoch into `out`; returns the source and
/// ebmc's free energy of the first training row (the first bundled digit).
fn train_rbm(out: &Path) -> (String, f64) {
    let source = std::fs::read_to_string(repo().join("models/rbm.ebm")).unwrap();
    let c = ebmc::compile(&source).unwrap_or_else(|d| panic!("{d:?}"));
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models["rbm"].clone();
    let train = c.program.trains["rbm"].clone();
    let base = repo().join("models");
    let data = ebmc::runtime::data::load(train.data.as_ref().unwrap(), &model, &base).unwrap();
    let (rows, test) = ebmc::runtime::data::split(data, train.test.as_ref(), &model, &base).unwrap();
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let opts = ebmc::runtime::train::RunOptions {
        epochs: 1,
        seed: 7,
        out: out.to_path_buf(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    ebmc::runtime::train::run(&source, &graph, &plans[0], &train, &rows, test.as_ref(), &opts, &mut |_| {}).unwrap();
    let params = ebmc::runtime::train::load_model_params(out, &model).unwrap();
    let first = rows.slice(0, 1);
    let f = ebmc::runtime::evaluate::row_free_energy(&model, &plans[0], &params, &first.vars, DeviceKind::Cpu).unwrap();
    (source, f[0])
}

#[test]
fn the_source_hash_is_sha256() {
    // The test vector of FIPS 180-2 for "abc".
    assert_eq!(
        ebmc::runtime::train::source_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_checkpoint_describes_itself_and_python_rebuilds_its_free_energy() {
    let out = scratch("rbm");
    let (source, ebmc_f) = train_rbm(&out);
    let dir = out.join("epoch-1");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["schema_version"], 1);
    assert_eq!(meta["model"], "rbm");
    assert_eq!(meta["source"], source.as_str());
    assert_eq!(meta["source_sha256"], ebmc::runtime::train::source_hash(&source).as_str());
    assert_eq!(meta["params"], serde_json::json!({ "W": [64, 16], "b": [64], "c": [16] }));
    assert_eq!(meta["data"]["source"], "digits(binarize: 8, scale: 1)");
    assert_eq!(meta["data"]["binding"], serde_json::json!(["v"]));
    assert_eq!(meta["data"]["rows"], 1797 - 297);
    assert_eq!(meta["data"]["test"], "last(rows: 297)");
    assert_eq!(meta["data"]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        (meta["seed"].clone(), meta["epoch"].clone(), meta["device"].clone()),
        (7.into(), 1.into(), "cpu".into())
    );
    assert_eq!(meta["options"]["objective"], serde_json::json!({ "name": "cd", "options": { "k": 10 } }));
    assert_eq!(meta["options"]["optimizer"]["options"]["lr"], 0.005);
    assert_eq!(meta["options"]["batch"], 20);
    for file in ["params.safetensors", "state.safetensors"] {
        let header = ebmc::tensor::safetensors_metadata(&dir.join(file)).unwrap();
        assert_eq!(header["format"], "ebmc-checkpoint");
        assert_eq!(header["format_version"], "1");
        assert_eq!(header["ebmc_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(header["model"], "rbm");
        assert_eq!(header["source_sha256"], ebmc::runtime::train::source_hash(&source));
        assert_eq!(header["epoch"], "1");
    }
    // The metadata reads back through the typed loader too.
    assert_eq!(ebmc::runtime::train::checkpoint_meta(&out).unwrap().epoch, 1);

    let python = std::process::Command::new("python3").args(["-c", "import safetensors, numpy"]).output();
    if !python.is_ok_and(|o| o.status.success()) {
        println!("note: python3 with safetensors and numpy not found; the docs/checkpoints.md snippet was not run");
        std::fs::remove_dir_all(&out).unwrap();
        return;
    }
    let doc = std::fs::read_to_string(repo().join("docs/checkpoints.md")).unwrap();
    let snippet = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/checkpoints.md has a ```python block");
    let script = out.join("snippet.py");
    std::fs::write(&script, snippet).unwrap();
    let run = std::process::Command::new("python3").arg(&script).arg(&out).current_dir(repo()).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    let python_f: f64 = stdout.trim().strip_prefix("F(v) = ").and_then(|x| x.parse().ok()).expect(&stdout);
    // Python sums in float64 from the stored float32 parameters; ebmc in
    // float32: 80 terms of size up to |F| each round to about 80 ε |F|.
    let tolerance = 80.0 * f64::from(f32::EPSILON) * ebmc_f.abs().max(1.0);
    assert!((python_f - ebmc_f).abs() <= tolerance, "python {python_f} vs ebmc {ebmc_f} (tolerance {tolerance:.2e})");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_checkpoint_without_a_schema_version_is_refused_on_resume_and_its_parameters_still_load() {
    let out = scratch("old");
    let dir = out.join("epoch-3");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(out.join("latest"), "epoch-3").unwrap();
    // The meta.json of ebmc before checkpoints carried a schema.
    std::fs::write(
        dir.join("meta.json"),
        r#"{"model":"rbm","source_hash":"cbf29ce484222325","compiler_version":"0.1.0","seed":7,"epoch":3,"step":9,"device":"cpu","train":{}}"#,
    )
    .unwrap();
    let source = std::fs::read_to_string(repo().join("models/rbm.ebm")).unwrap();
    let c = ebmc::compile(&source).unwrap();
    let model = &c.program.models["rbm"];
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 1);
    // Written without a metadata block, as older ebmc did.
    ebmc::tensor::save_safetensors(&dir.join("params.safetensors"), &params).unwrap();
    let e = ebmc::runtime::train::checkpoint_meta(&out).unwrap_err();
    assert!(e.contains("meta.json") && e.contains("no `schema_version`") && e.contains("train afresh"), "{e}");
    assert_eq!(ebmc::runtime::train::load_model_params(&out, model).unwrap(), params);
    assert!(ebmc::tensor::safetensors_metadata(&dir.join("params.safetensors")).unwrap().is_empty());

    let mut newer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    newer["schema_version"] = 99.into();
    std::fs::write(dir.join("meta.json"), newer.to_string()).unwrap();
    let e = ebmc::runtime::train::checkpoint_meta(&out).unwrap_err();
    assert!(e.contains("schema version 99") && e.contains("newer ebmc"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn safetensors_metadata_is_written_in_one_order() {
    let out = scratch("order");
    std::fs::create_dir_all(&out).unwrap();
    let tensors: ebmc::tensor::Tensors =
        [("W".to_string(), ebmc::tensor::HostTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]))].into_iter().collect();
    let metadata = (0..8).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
    let files: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let path = out.join(format!("{i}.safetensors"));
            ebmc::tensor::save_safetensors_with_metadata(&path, &tensors, &metadata).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(ebmc::tensor::safetensors_metadata(&out.join("0.safetensors")).unwrap(), metadata);
    assert_eq!(ebmc::tensor::load_safetensors(&out.join("0.safetensors")).unwrap(), tensors);
    std::fs::remove_dir_all(&out).unwrap();
}
