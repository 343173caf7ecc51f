//! The library façade (`ebmc::api`): errors at the boundary instead of
//! panics, exact clamping, fitting in memory, checkpoints, build scripts.

use ebmc::{Control, Error, Event, FitOptions, Method, Model, Params, Rows};

const RBM: &str = "model tiny {
    visible v : binary[3];
    hidden h : binary[2];
    param W : real[3, 2] = normal(0, 1);
    param b : real[3] = normal(0, 1);
    param c : real[2] = normal(0, 1);
    energy e = -(v @ W @ h) - b @ v - c @ h;
}";

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ebmc-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny() -> (Model, Params) {
    let model = Model::from_source(RBM).unwrap();
    let params = model.init_params(3);
    (model, params)
}

fn v_rows() -> Rows {
    Rows::new().with("v", vec![1., 0., 1., 0., 1., 1.], &[2, 3]).unwrap()
}

#[test]
fn the_types_a_host_uses_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Model>();
    assert_send::<ebmc::Sampler>();
    assert_send::<Params>();
    assert_send::<Rows>();
    assert_send::<Error>();
    assert_send::<ebmc::backend::Sampler>();
    assert_send::<ebmc::backend::Trainer>();
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();
    assert_error::<ebmc::runtime::data::DataError>();
    assert_error::<ebmc::runtime::train::RunError>();
    assert_error::<ebmc::backend::TrainError>();
    assert_error::<ebmc::tensor::ShapeError>();
    assert_error::<ebmc::analysis::limits::LimitError>();
}

#[test]
fn compile_errors_render_as_ebmc_check_renders_them() {
    let source = "model m {\n    visible v : binary[2];\n    energy e = -sum(w * v);\n}\n";
    let err = Model::from_source(source).unwrap_err();
    let Err(diagnostics) = ebmc::check_source(source) else { panic!("the source is broken") };
    let expected = ebmc::front::diagnostic::render_plain("<source>", source, &diagnostics);
    assert_eq!(err.to_string(), expected.trim_end());
    assert_eq!(err.code(), "E0100");
    assert_eq!(err.diagnostics(), diagnostics);
    assert!(err.to_string().contains("<source>:3:"), "{err}");
}

#[test]
fn a_file_with_several_models_needs_a_name() {
    let source = format!("{RBM}\nmodel other {{ visible x : binary[2]; energy e = -sum(x); }}");
    let err = Model::from_source(&source).unwrap_err();
    assert_eq!(err.code(), "E0601");
    assert!(err.to_string().contains("`other`, `tiny`"), "{err}");
    assert_eq!(Model::from_source_named(&source, "other").unwrap().name(), "other");
    let err = Model::from_source_named(&source, "third").unwrap_err();
    assert_eq!(err.code(), "E0601");
    assert!(err.to_string().contains("no model `third`"), "{err}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let err = Model::from_file("no/such/model.ebm").unwrap_err();
    assert_eq!(err.code(), "E0609");
    assert!(err.to_string().contains("no/such/model.ebm"), "{err}");
}

#[test]
fn a_wrong_width_batch_is_an_error_naming_the_variable() {
    let (model, params) = tiny();
    let rows = Rows::new().with("v", vec![1., 0., 1., 0.], &[2, 2]).unwrap();
    let err = model.free_energy(&params, &rows).unwrap_err();
    assert_eq!(err.code(), "E0602");
    let text = err.to_string();
    assert!(text.contains("`v`") && text.contains("[2, 2]") && text.contains("[2, 3]"), "{text}");
    let opts = FitOptions::new().settings("objective = cd;").epochs(1);
    assert_eq!(model.fit(&params, &rows, &opts).unwrap_err().code(), "E0602");
    let mut sampler = model.sampler(&params, 4, 0).unwrap();
    assert_eq!(sampler.clamp(&rows).unwrap_err().code(), "E0602");
}

#[test]
fn rows_that_omit_a_variable_are_an_error() {
    let (model, params) = tiny();
    // The total energy needs `h` as well.
    let err = model.energy(&params, &v_rows()).unwrap_err();
    assert_eq!(err.code(), "E0602");
    assert!(err.to_string().contains("no values for the variable `h`"), "{err}");
    let h_only = Rows::new().with("h", vec![1., 0.], &[1, 2]).unwrap();
    let err = model.log_likelihood(&params, &h_only).unwrap_err();
    assert!(err.to_string().contains("`v`"), "{err}");
    let opts = FitOptions::new().settings("objective = cd;").epochs(1);
    assert_eq!(model.fit(&params, &Rows::new(), &opts).unwrap_err().code(), "E0602");
}

#[test]
fn rows_with_an_unknown_name_a_nan_or_a_value_outside_the_domain_are_errors() {
    let (model, params) = tiny();
    let typo = Rows::new().with("w", vec![1., 0., 1.], &[1, 3]).unwrap();
    let err = model.free_energy(&params, &typo).unwrap_err();
    assert!(err.to_string().contains("`w`, which is not a variable"), "{err}");
    let nan = Rows::new().with("v", vec![1., f32::NAN, 1.], &[1, 3]).unwrap();
    let err = model.free_energy(&params, &nan).unwrap_err();
    assert_eq!(err.code(), "E0602");
    assert!(err.to_string().contains("NaN"), "{err}");
    let half = Rows::new().with("v", vec![1., 0., 1., 0., 0.5, 1.], &[2, 3]).unwrap();
    let err = model.free_energy(&params, &half).unwrap_err();
    assert!(err.to_string().contains("row 1 of `v` holds 0.5 at index 1"), "{err}");
    assert!(Rows::new().with("v", vec![1., 0.], &[1, 3]).is_err());
    assert!(Rows::new().with("v", vec![], &[]).is_err());
}

#[test]
fn wrong_shape_missing_or_nan_parameters_are_errors() {
    let (model, params) = tiny();
    let mut wrong = params.clone();
    wrong.insert("W", vec![0.0; 6], &[2, 3]).unwrap();
    let err = model.free_energy(&wrong, &v_rows()).unwrap_err();
    assert_eq!(err.code(), "E0603");
    assert!(err.to_string().contains("parameter `W` has shape [2, 3], the model declares [3, 2]"), "{err}");
    let mut nan = params.clone();
    nan.insert("b", vec![0.0, f32::NAN, 0.0], &[3]).unwrap();
    assert_eq!(model.sampler(&nan, 2, 0).err().map(|e| e.code()), Some("E0603"));
    assert_eq!(model.log_likelihood(&nan, &v_rows()).unwrap_err().code(), "E0603");
    let err = model.energy(&Params::new(), &v_rows()).unwrap_err();
    assert!(err.to_string().contains("no value for the parameter"), "{err}");
    let opts = FitOptions::new().settings("objective = cd;").epochs(1);
    assert_eq!(model.fit(&nan, &v_rows(), &opts).unwrap_err().code(), "E0603");
    assert!(Params::new().insert("W", vec![0.0; 5], &[3, 2]).is_err());
}

#[test]
fn fitting_without_a_train_block_needs_settings_and_sane_options() {
    let (model, params) = tiny();
    let err = model.fit(&params, &v_rows(), &FitOptions::new()).unwrap_err();
    assert_eq!(err.code(), "E0605");
    assert!(err.to_string().contains("FitOptions::settings"), "{err}");
    let zero = FitOptions::new().settings("objective = cd;").epochs(0);
    assert_eq!(model.fit(&params, &v_rows(), &zero).unwrap_err().code(), "E0605");
    // A bad setting is a compile error pointing into the settings.
    let bad = FitOptions::new().settings("objective = cd(k: 0);");
    let err = model.fit(&params, &v_rows(), &bad).unwrap_err();
    assert_eq!(err.code(), "E0107");
    assert!(err.to_string().contains("(with the fit settings)"), "{err}");
    // The rows are the host's: settings naming a data source or a test split are refused, not ignored.
    for (settings, key) in
        [("data = digits() -> v; objective = cd;", "data"), ("objective = cd; test = last(1);", "test")]
    {
        let err = model.fit(&params, &v_rows(), &FitOptions::new().settings(settings)).unwrap_err();
        assert_eq!(err.code(), "E0301", "{settings}");
        assert!(err.to_string().contains(&format!("`{key}` is not a setting of a fit on rows in memory")), "{err}");
    }
    // Settings that close the block and open another are not one train block's settings.
    let two = FitOptions::new().settings("objective = cd; } train m { objective = pl;");
    assert_eq!(model.fit(&params, &v_rows(), &two).unwrap_err().code(), "E0605");
    // Without `objective`, the one required setting, the error says so.
    let none = FitOptions::new().settings("optimizer = sgd(lr: 0.1);");
    assert_eq!(model.fit(&params, &v_rows(), &none).unwrap_err().code(), "E0302");
}

#[test]
fn energy_and_free_energy_match_the_formulas() {
    let (model, params) = tiny();
    let (w, _) = params.get("W").unwrap();
    let (b, _) = params.get("b").unwrap();
    let (c, _) = params.get("c").unwrap();
    let v = [1., 0., 1.];
    let h = [0., 1.];
    let mut e = 0.0f64;
    for i in 0..3 {
        e -= f64::from(b[i] * v[i]);
        for j in 0..2 {
            e -= f64::from(v[i] * w[i * 2 + j] * h[j]);
        }
    }
    e -= (0..2).map(|j| f64::from(c[j] * h[j])).sum::<f64>();
    let rows = Rows::new().with("v", v.to_vec(), &[1, 3]).unwrap().with("h", h.to_vec(), &[1, 2]).unwrap();
    let got = model.energy(&params, &rows).unwrap()[0];
    assert!((got - e).abs() < 1e-5, "{got} vs {e}");
    // F(v) = -b·v - Σ_j softplus(c_j + Σ_i v_i W_ij)
    let mut f = -(0..3).map(|i| f64::from(b[i] * v[i])).sum::<f64>();
    for j in 0..2 {
        let x: f64 = f64::from(c[j]) + (0..3).map(|i| f64::from(v[i] * w[i * 2 + j])).sum::<f64>();
        f -= x.exp().ln_1p();
    }
    let got = model.free_energy(&params, &Rows::new().with("v", v.to_vec(), &[1, 3]).unwrap()).unwrap()[0];
    assert!((got - f).abs() < 1e-5, "{got} vs {f}");
}

#[test]
fn log_likelihood_is_exact_for_a_standard_gaussian() {
    let model = Model::from_source("model g { visible x : real[1]; energy e = 0.5 * sum(square(x)); }").unwrap();
    let rows = Rows::new().with("x", vec![0.0, 1.0], &[2, 1]).unwrap();
    let ll = model.log_likelihood(&model.init_params(0), &rows).unwrap();
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    assert!((ll.per_row[0] + half_log_2pi).abs() < 1e-4, "{:?}", ll.per_row);
    assert!((ll.per_row[1] + half_log_2pi + 0.5).abs() < 1e-4, "{:?}", ll.per_row);
    assert!(matches!(ll.method, Method::Exact | Method::Grid { .. }), "{:?}", ll.method);
}

/// Clamped `v`, the hidden units are drawn from p(h_j = 1 | v) =
/// sigmoid(c_j + Σ_i v_i W_ij) exactly, and `v` stays put. 4,000 chains after
/// one sweep: each frequency has sd at most 0.008, so 0.035 is over 4 sd.
#[test]
fn clamping_draws_the_rest_from_its_exact_conditional() {
    let (model, params) = tiny();
    let mut sampler = model.sampler(&params, 4000, 11).unwrap();
    let v = [1., 0., 1.];
    sampler.clamp(&Rows::new().with("v", v.to_vec(), &[1, 3]).unwrap()).unwrap();
    assert_eq!(sampler.clamped(), ["v".to_string()]);
    let (w, _) = params.get("W").unwrap();
    let (c, _) = params.get("c").unwrap();
    for _ in 0..3 {
        let state = sampler.run(1);
        let (vs, _) = state.get("v").unwrap();
        assert!(vs.chunks(3).all(|row| row == v), "the clamped variable moved");
        let (hs, shape) = state.get("h").unwrap();
        assert_eq!(shape, [4000, 2]);
        for j in 0..2 {
            let x: f32 = c[j] + (0..3).map(|i| v[i] * w[i * 2 + j]).sum::<f32>();
            let p = 1.0 / (1.0 + (-x).exp());
            let freq = hs.chunks(2).map(|r| r[j]).sum::<f32>() / 4000.0;
            assert!((freq - p).abs() < 0.035, "h{j}: {freq} vs {p}");
        }
    }
    sampler.release();
    let state = sampler.run(5);
    assert!(state.get("v").unwrap().0.chunks(3).any(|row| row != v), "released chains never moved");
    let unknown = Rows::new().with("z", vec![1.0], &[1, 1]).unwrap();
    assert_eq!(sampler.clamp(&unknown).unwrap_err().code(), "E0602");
}

/// The bundled bars-and-stripes RBM: 30 patterns of 16 pixels, so the best
/// average log-likelihood is log(1/30) = -3.40 and parameters near zero give
/// about 16·log(1/2) = -11.09. The train block's CD-1 run (200 epochs of 3
/// steps, seed fixed) reaches -7.9 from -11.1; more than 2 nats are required.
#[test]
fn fit_improves_the_exact_log_likelihood_on_the_bundled_data() {
    let model = Model::from_file("models/bars.ebm").unwrap();
    let (rows, test) = model.train_data("models").unwrap();
    assert!(test.is_none());
    assert_eq!(rows.len(), 30);
    let start = model.init_params(1);
    let before = model.log_likelihood(&start, &rows).unwrap();
    assert_eq!(before.method, Method::Exact);
    let mut steps = 0;
    let fitted = model
        .fit_with(&start, &rows, &FitOptions::new().seed(5), |event| {
            if let Event::Step { .. } = event {
                steps += 1;
            }
            Control::Continue
        })
        .unwrap();
    assert_eq!(steps, 200 * 3);
    assert_eq!(fitted.steps, 600);
    assert!(!fitted.stopped);
    let after = model.log_likelihood(&fitted.params, &rows).unwrap();
    eprintln!("average log-likelihood {} -> {}", before.mean, after.mean);
    assert!(after.mean > before.mean + 2.0, "{} -> {}", before.mean, after.mean);
    assert!(after.mean < -3.39, "{} beats the entropy bound", after.mean);
    let tracked = fitted.history.last().unwrap().log_likelihood.unwrap();
    assert!((tracked - after.mean).abs() < 1e-6, "{tracked} vs {}", after.mean);
    // The same seed gives the same parameters.
    let again = model.fit(&start, &rows, &FitOptions::new().seed(5)).unwrap();
    assert_eq!(again.params, fitted.params);
}

/// `fit` runs what `ebmc train` runs: the same parameters after the same epochs and seed.
#[test]
fn fit_matches_the_training_run_of_the_cli() {
    let model = Model::from_file("models/bars.ebm").unwrap();
    let (rows, _) = model.train_data("models").unwrap();
    let fitted = model.fit(&model.init_params(5), &rows, &FitOptions::new().epochs(3).seed(5)).unwrap();
    let dir = temp("run");
    let data = ebmc::runtime::data::Dataset { rows: rows.len(), vars: rows.tensors().clone() };
    let opts = ebmc::runtime::train::RunOptions {
        epochs: 3,
        seed: 5,
        out: dir.clone(),
        resume: false,
        device: ebmc::backend::DeviceKind::Cpu,
    };
    let train = model.train().unwrap();
    let history =
        ebmc::runtime::train::run(model.source(), model.graph(), model.plan(), train, &data, None, &opts, &mut |_| {})
            .unwrap();
    assert_eq!(model.load(&dir).unwrap(), fitted.params);
    assert_eq!(
        history.iter().map(|m| m.loss).collect::<Vec<_>>(),
        fitted.history.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_and_load_round_trip_and_refuse_another_models_checkpoint() {
    let (model, params) = tiny();
    let dir = temp("checkpoint");
    let first = model.save(&dir, &params).unwrap();
    assert!(first.ends_with("epoch-1"));
    let second = model.save(&dir, &model.init_params(9)).unwrap();
    assert!(second.ends_with("epoch-2"));
    assert_eq!(model.load(&dir).unwrap(), model.init_params(9));
    assert_eq!(model.load(&first).unwrap(), params);
    let other = Model::from_file("models/bars.ebm").unwrap();
    let err = other.load(&dir).unwrap_err();
    assert_eq!(err.code(), "E0609");
    assert!(
        err.to_string().contains("not a parameter of this model") || err.to_string().contains("parameter"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_model_fails_the_build_script_with_its_diagnostic() {
    let dir = temp("build");
    let good = dir.join("good.ebm");
    let broken = dir.join("broken.ebm");
    std::fs::write(&good, RBM).unwrap();
    std::fs::write(&broken, "model m {\n    visible v : binary[2];\n    energy e = -sum(w * v);\n}\n").unwrap();
    let mut out = Vec::new();
    ebmc::build::check_models_to(&[&good], &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, format!("cargo:rerun-if-changed={}\n", good.display()));
    let mut out = Vec::new();
    let errors = ebmc::build::check_models_to(&[&good, &broken], &mut out).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code(), "E0100");
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&format!("cargo:rerun-if-changed={}", broken.display())), "{text}");
    assert!(text.contains("cargo:warning=error[E0100]: cannot find name `w`"), "{text}");
    assert!(text.contains(&format!("{}:3:", broken.display())), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sampler_moves_to_a_worker_thread() {
    let (model, params) = tiny();
    let mut sampler = model.sampler(&params, 16, 4).unwrap();
    let state = std::thread::spawn(move || sampler.run(3)).join().unwrap();
    assert_eq!(state.get("v").unwrap().1, [16, 3]);
}

#[test]
fn a_free_energy_over_a_continuous_variable_left_out_is_an_error() {
    let model = Model::from_source(
        "model c { visible x : real[2]; visible y : binary[2]; energy e = 0.5 * sum(square(x)) - sum(x * y); }",
    )
    .unwrap();
    let rows = Rows::new().with("y", vec![1.0, 0.0], &[1, 2]).unwrap();
    let err = model.free_energy(&model.init_params(0), &rows).unwrap_err();
    assert_eq!(err.code(), "E0608");
    assert!(err.to_string().contains("`x`"), "{err}");
}

#[test]
fn a_log_likelihood_without_any_log_z_is_an_error_saying_why() {
    // Quartic in three dimensions: not Gaussian, and past the grid's two.
    let model = Model::from_source("model q { visible x : real[3]; energy e = sum(square(square(x))); }").unwrap();
    let rows = Rows::new().with("x", vec![0.0, 0.5, -0.5], &[1, 3]).unwrap();
    let err = model.log_likelihood(&model.init_params(0), &rows).unwrap_err();
    assert_eq!(err.code(), "E0608");
    assert!(err.to_string().contains("no grid integral"), "{err}");
}
