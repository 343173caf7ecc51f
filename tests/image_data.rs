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

/// Compiles `model` with `DATA` replaced by `data` and loads its train block's data.
fn load(dir: &Scratch, model: &str, data: &str) -> Result<ebmc::runtime::data::Dataset, String> {
    let compiled = ebmc::compile(&model.replace("DATA", data)).unwrap_or_else(|d| panic!("{data}: {d:?}"));
    let train = &compiled.program.trains["m"];
    let model = &compiled.program.models["m"];
    ebmc::runtime::data::load(train.data.as_ref().unwrap(), model, &dir.0).map_err(|e| e.to_string())
}

#[test]
fn images_of_rank_3_load_from_every_image_source() {
    let dir = Scratch::new("rank3");
    let model = |x: &str, y: bool| {
        let (label, c, term) = match y {
            true => ("    visible y : categorical(10);\n", "    param c : real[10] = zeros;\n", " - (c @ y)"),
            false => ("", "", ""),
        };
        format!(
            "model m {{\n    visible x : {x} in [0, 1];\n{label}    param w : real[N] = zeros;\n{c}    energy e = -(w @ flatten(x)){term};\n}}\ntrain m {{\n    data = DATA;\n    objective = pcd;\n}}\n"
        )
    };
    let with = |x: &str, n: usize, y: bool| model(x, y).replace("[N]", &format!("[{n}]"));
    // The bundled digits as [1, 8, 8] images in [0, 1], with their labels.
    let digits = load(&dir, &with("real[1, 8, 8]", 64, true), "digits(scale: 0.0625) -> (x, y)").unwrap();
    assert_eq!((digits.vars["x"].shape.clone(), digits.vars["y"].shape.clone()), (vec![1797, 1, 8, 8], vec![1797, 10]));
    assert!(digits.vars["x"].data.iter().all(|p| (0.0..=1.0).contains(p)));
    // MNIST-shaped IDX files: three 28x28 images and their labels.
    let pixels: Vec<u8> = (0..3 * 784).map(|i| (i % 256) as u8).collect();
    let images = dir.write("train-images-idx3-ubyte", &idx(&[3, 28, 28], &pixels));
    let labels = dir.write("train-labels-idx1-ubyte", &idx(&[3], &[7, 2, 1]));
    let mnist = format!("idx({}, labels: {}, scale: 0.00392156862745098) -> (x, y)", path(&images), path(&labels));
    for x in ["real[1, 28, 28]", "real[28, 28]", "real[784]"] {
        let data = load(&dir, &with(x, 784, true), &mnist).unwrap();
        assert_eq!(data.vars["x"].data.len(), 3 * 784, "{x}");
        // Pixel 257 is byte 1 (pixels run 0, 1, ..., 255, 0, 1, ...).
        assert_eq!(data.vars["x"].data[257], (1.0f64 / 255.0) as f32, "{x}");
        assert_eq!(data.vars["y"].data[7], 1.0, "{x}");
    }
    let wrong = load(&dir, &with("real[1, 32, 32]", 1024, true), &mnist).unwrap_err();
    let says = format!("{} holds rows of shape [28, 28]; `x` is declared real[1, 32, 32] in [0, 1]", images.display());
    assert!(wrong.contains(&says), "{wrong}");
    // A CIFAR-10 batch as [3, 32, 32] images, alone.
    let record = [vec![4u8], (0..3072u32).map(|i| (i / 1024) as u8 * 100).collect()].concat();
    let batch = dir.write("data_batch_1.bin", &record);
    let cifar = load(&dir, &with("real[3, 32, 32]", 3072, false), &format!("cifar10({}) -> x", path(&batch))).unwrap();
    let x = &cifar.vars["x"];
    assert_eq!(x.shape, vec![1, 3, 32, 32]);
    // The red plane first, then green, then blue.
    let byte = |b: f64| (b / 255.0) as f32;
    assert_eq!((x.data[0], x.data[1024], x.data[2048]), (0.0, byte(100.0), byte(200.0)));
    // An NPY array of shape (2, 3, 4, 4) feeds real[3, 4, 4] and refuses real[4, 4, 3].
    let array = ebmc::runtime::export::npy(&[vec![0.5; 48], vec![0.25; 48]]);
    let flat = dir.write("flat.npy", &array);
    let npy = load(&dir, &with("real[3, 4, 4]", 48, false), &format!("npy({}) -> x", path(&flat))).unwrap();
    assert_eq!(npy.vars["x"].shape, vec![2, 3, 4, 4]);
    // The CLI exits 1 on a shape that does not fit, before any training.
    let run = train(&dir, &with("real[1, 32, 32]", 1024, true), &mnist);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains(&says), "{}", stderr(&run));
}
