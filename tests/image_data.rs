//! Image data end to end: `ebmc train` reads IDX images with their labels
//! file and CIFAR-10 batches written here, and data that does not fit the
//! declared shape exits 1 naming the file and both shapes.

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

/// A fresh, empty directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ebmc-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    out.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

/// Trains `model` (its train block's `DATA` replaced by `data`) for one epoch.
fn train(dir: &Scratch, model: &str, data: &str) -> Output {
    let file = dir.write("m.ebm", model.replace("DATA", data).as_bytes());
    let out = dir.0.join("run");
    let _ = std::fs::remove_dir_all(&out);
    ebmc(&["train", &file.display().to_string(), "--epochs", "1", "--out", &out.display().to_string()])
}

fn path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

const DIGIT_MODEL: &str = "model m {
    visible x : binary[16];
    visible y : categorical(3);
    param b : real[16] = zeros;
    param c : real[3] = zeros;
    energy e = -(b @ x) - (c @ y);
}
train m {
    data = DATA;
    objective = pl;
    batch = 4;
}
";

#[test]
fn idx_images_train_with_their_labels_file_and_mismatches_exit_1() {
    let dir = Scratch::new("idx");
    // Eight 4x4 images of 0 or 255 and their labels 0, 1, 2, 0, ...
    let pixels: Vec<u8> = (0..8 * 16).map(|i| if (i * 7) % 3 == 0 { 255 } else { 0 }).collect();
    let images = dir.write("train-images-idx3-ubyte", &idx(&[8, 4, 4], &pixels));
    let labels = dir.write("train-labels-idx1-ubyte", &idx(&[8], &[0, 1, 2, 0, 1, 2, 0, 1]));
    let seven = dir.write("seven-labels-idx1-ubyte", &idx(&[7], &[0; 7]));
    let (images, labels, seven) = (path(&images), path(&labels), path(&seven));
    let run = train(&dir, DIGIT_MODEL, &format!("idx({images}, labels: {labels}, binarize: 128) -> (x, y)"));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    for (data, says) in [
        (format!("idx({images}, labels: {seven}, binarize: 128) -> (x, y)"), "holds 7 labels but".to_string()),
        (
            format!("idx({images}, binarize: 128) -> (x, y)"),
            "holds rows of shape [4, 4], which feed one variable, but `-> (x, y)` binds 2".into(),
        ),
        (
            format!("idx({images}, labels: {labels}, binarize: 128) -> x"),
            "gives a label per image, but `-> x` binds 1 variable".into(),
        ),
    ] {
        // `-> x` needs a model of `x` alone.
        let model = match data.ends_with("-> x") {
            true => DIGIT_MODEL
                .replace("    visible y : categorical(3);\n", "")
                .replace("    param c : real[3] = zeros;\n", "")
                .replace(" - (c @ y)", ""),
            false => DIGIT_MODEL.to_string(),
        };
        let run = train(&dir, &model, &data);
        assert_eq!(run.status.code(), Some(1), "{data}: {}", stderr(&run));
        assert!(stderr(&run).contains(&says), "{data}: {}", stderr(&run));
        assert!(!stderr(&run).contains("panicked"), "{}", stderr(&run));
    }
    // Rows of [4, 4] do not fit 15 units.
    let narrow = DIGIT_MODEL.replace("[16]", "[15]");
    let run = train(&dir, &narrow, &format!("idx({images}, labels: {labels}, binarize: 128) -> (x, y)"));
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("holds rows of shape [4, 4]; `x` is declared binary[15]"), "{}", stderr(&run));
}

#[test]
fn cifar10_batches_train_from_a_list_of_files_and_a_torn_batch_exits_1() {
    let dir = Scratch::new("cifar");
    let record = |label: u8| [vec![label], (0..3072u32).map(|i| (i % 251) as u8).collect()].concat();
    let a = dir.write("data_batch_1.bin", &[record(3), record(9)].concat());
    let b = dir.write("data_batch_2.bin", &[record(0), record(5)].concat());
    let torn = dir.write("torn.bin", &[record(1), vec![7; 100]].concat());
    let model = "model m {
    visible x : real[3072] in [0, 1];
    visible y : categorical(10);
    param b : real[3072] = zeros;
    param c : real[10] = zeros;
    energy e = -(b @ x) - (c @ y);
}
train m {
    data = DATA;
    objective = pcd(k: 1, chains: 2, buffer: 4);
    batch = 2;
}
";
    let run = train(&dir, model, &format!("cifar10([{}, {}]) -> (x, y)", path(&a), path(&b)));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let run = train(&dir, model, &format!("cifar10({}) -> (x, y)", path(&torn)));
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let says = format!("{}: 3173 bytes is not a whole number of CIFAR-10 records", torn.display());
    assert!(stderr(&run).contains(&says), "{}", stderr(&run));
    // Unscaled bytes are not in [0, 1].
    let run = train(&dir, model, &format!("cifar10({}, scale: 1) -> (x, y)", path(&a)));
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("is not a value of `x`, which takes real in [0, 1]"), "{}", stderr(&run));
}
