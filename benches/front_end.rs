//! Times parse + check (+ fmt) of the whole model zoo. Run with
//! `cargo bench --bench front_end`. Prints figures; asserts nothing.

use std::time::Instant;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut sources: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ebm"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    sources.sort();
    let bytes: usize = sources.iter().map(String::len).sum();

    let time = |label: &str, f: &dyn Fn()| {
        f(); // warm up
        let mut samples: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!("{label:<28} median {:>8.3} ms   min {:>8.3} ms", samples[25], samples[0]);
    };
    println!("model zoo: {} files, {} bytes", sources.len(), bytes);
    time("parse + check (whole zoo)", &|| {
        for s in &sources {
            ebmc::compile(s).expect("zoo compiles");
        }
    });
    time("fmt (whole zoo)", &|| {
        for s in &sources {
            ebmc::format_source(s).expect("zoo formats");
        }
    });
}
