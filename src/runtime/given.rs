//! Clamped sampling: parts of variables held at given rows while the rest
//! is sampled (`ebmc sample --given PART=FILE`, `api::Sampler::clamp_part`).
//!
//! A part is a variable, whole (`v`), or a box of its units: a range or an
//! index per leading unit axis (`v[0..32]`, `x[0, 0..4]`, `y[2]`), the axes
//! left out whole. A categorical variable's one-hot axis is not a unit axis:
//! its units are held whole. Ranges are half-open, `a..b`, `a..`, `..b` or
//! `..`, counted from 0. Chain `i` is held at row `i mod rows` of the
//! given values.

use crate::analysis::program::{Domain, Model, Variable};
use crate::backend::Clamp;
use crate::tensor::HostTensor;
use std::ops::Range;
use std::path::PathBuf;

/// Part of a variable, resolved against its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// As written.
    pub text: String,
    /// The variable.
    pub var: String,
    /// One range per unit axis of the variable.
    pub ranges: Vec<Range<usize>>,
    /// The variable's unit axes' sizes.
    unit_shape: Vec<usize>,
    /// Categories per unit (1 unless categorical).
    width: usize,
    domain: Domain,
}

/// A part that does not parse or does not fit its model. Wording lives in `messages.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum PartError {
    /// `--given` without `PART=FILE`.
    NoFile {
        /// The argument as given.
        text: String,
    },
    /// A part that does not parse; `reason` says what was expected.
    Syntax {
        /// The part as written.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A name that is not a variable of the model.
    UnknownVariable {
        /// The part as written.
        text: String,
        /// The name.
        var: String,
        /// The model's variables.
        known: Vec<String>,
    },
    /// More indices than the variable has unit axes.
    Axes {
        /// The part as written.
        text: String,
        /// The variable's type, as declared.
        declared: String,
        /// Indices given.
        given: usize,
        /// Unit axes the variable has.
        axes: usize,
    },
    /// A range past the end of its axis, or empty.
    OutOfRange {
        /// The part as written.
        text: String,
        /// The axis, from 0.
        axis: usize,
        /// The range asked for.
        range: Range<usize>,
        /// The axis' size.
        size: usize,
    },
    /// Values for a part that are not whole rows of it.
    Values {
        /// The part as written.
        text: String,
        /// Values given.
        given: usize,
        /// Values in one row of the part.
        per_row: usize,
    },
}

/// `PART=FILE`, as `ebmc sample --given` takes it.
pub fn parse_given(arg: &str) -> Result<(String, PathBuf), PartError> {
    match arg.split_once('=') {
        Some((part, file)) if !part.trim().is_empty() && !file.trim().is_empty() => {
            Ok((part.trim().to_string(), PathBuf::from(file.trim())))
        }
        _ => Err(PartError::NoFile { text: arg.to_string() }),
    }
}

impl Part {
    /// Parses `text` and checks it against `model`'s variables.
    pub fn parse(text: &str, model: &Model) -> Result<Part, PartError> {
        let syntax = |reason| PartError::Syntax { text: text.to_string(), reason };
        let t = text.trim();
        let (name, inside) = match t.split_once('[') {
            Some((name, rest)) => {
                let inside = rest.strip_suffix(']').ok_or_else(|| syntax("a `]` at the end"))?;
                (name.trim(), Some(inside))
            }
            None => (t, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(syntax("a variable's name, then indices in brackets (`v[0..32]`)"));
        }
        let v = model.variable(name).ok_or_else(|| PartError::UnknownVariable {
            text: text.to_string(),
            var: name.to_string(),
            known: model.variables.iter().map(|v| v.name.clone()).collect(),
        })?;
        let (unit_shape, width) = match v.domain {
            Domain::Categorical { categories } => (v.shape[..v.shape.len() - 1].to_vec(), categories),
            _ => (v.shape.clone(), 1),
        };
        let specs: Vec<&str> = match inside {
            Some(s) => s.split(',').map(str::trim).collect(),
            None => Vec::new(),
        };
        if specs.len() > unit_shape.len() {
            return Err(PartError::Axes {
                text: text.to_string(),
                declared: crate::analysis::graph::type_text(v),
                given: specs.len(),
                axes: unit_shape.len(),
            });
        }
        let number = |s: &str, default: usize| -> Result<usize, PartError> {
            if s.is_empty() { Ok(default) } else { s.parse().map_err(|_| syntax("indices as whole numbers from 0")) }
        };
        let mut ranges = Vec::new();
        for (axis, &size) in unit_shape.iter().enumerate() {
            let range = match specs.get(axis) {
                None => 0..size,
                Some(s) => match s.split_once("..") {
                    Some((a, b)) => number(a.trim(), 0)?..number(b.trim(), size)?,
                    None if s.is_empty() => return Err(syntax("an index or a range on each axis named")),
                    None => {
                        let i = number(s, 0)?;
                        i..i.saturating_add(1)
                    }
                },
            };
            if range.start >= range.end || range.end > size {
                return Err(PartError::OutOfRange { text: text.to_string(), axis, range, size });
            }
            ranges.push(range);
        }
        Ok(Part { text: t.to_string(), var: v.name.clone(), ranges, unit_shape, width, domain: v.domain.clone() })
    }

    /// The part's shape: each range's length, then a categorical's categories.
    pub fn shape(&self) -> Vec<usize> {
        let mut shape: Vec<usize> = self.ranges.iter().map(|r| r.len()).collect();
        if matches!(self.domain, Domain::Categorical { .. }) {
            shape.push(self.width);
        }
        shape
    }

    /// Whether the part is the whole variable.
    pub fn is_whole(&self) -> bool {
        self.ranges.iter().zip(&self.unit_shape).all(|(r, &n)| r.start == 0 && r.end == n)
    }

    /// The part's elements within one value of the variable, row-major.
    pub fn elements(&self) -> Vec<usize> {
        let mut units = vec![0usize];
        for (r, &n) in self.ranges.iter().zip(&self.unit_shape) {
            units = units.iter().flat_map(|&u| r.clone().map(move |i| u * n + i)).collect();
        }
        units.into_iter().flat_map(|u| u * self.width..(u + 1) * self.width).collect()
    }

    /// A variable that stands for the part (its name is the part's text), so
    /// that rows for it are read and checked as a variable's are.
    pub fn variable(&self, model: &Model) -> Variable {
        // Cannot fire: `parse` resolved the name against this model.
        let v = model.variable(&self.var).expect("the part's variable");
        Variable { name: self.text.clone(), role: v.role, domain: v.domain.clone(), shape: self.shape(), span: v.span }
    }

    /// What the sampler holds for `chains` chains given `rows` of the part
    /// (`[rows, ...part shape]` flattened): chain `i` takes row `i mod rows`.
    pub fn clamp(&self, values: &[f32], chains: usize) -> Result<Clamp, PartError> {
        let elements = self.elements();
        let per_row = elements.len();
        if values.is_empty() || !values.len().is_multiple_of(per_row) {
            return Err(PartError::Values { text: self.text.clone(), given: values.len(), per_row });
        }
        let rows = values.len() / per_row;
        let values = (0..chains).flat_map(|c| values[(c % rows) * per_row..][..per_row].iter().copied()).collect();
        Ok(Clamp { var: self.var.clone(), elements, values })
    }
}

/// A part's rows read from `file` (CSV or NPY, one column per unit; see
/// `data::load_values`), as the sampler holds them for `chains` chains.
pub fn load(part: &Part, model: &Model, file: &std::path::Path, chains: usize) -> Result<Clamp, GivenError> {
    let v = part.variable(model);
    let data = crate::runtime::data::load_values(file, &v).map_err(GivenError::Data)?;
    // Cannot fire: `load_values` binds the one variable it is given.
    let rows: &HostTensor = &data.vars[&v.name];
    part.clamp(&rows.data, chains).map_err(GivenError::Part)
}

/// Why `--given` could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum GivenError {
    /// The part does not fit the model.
    Part(PartError),
    /// The file's rows do not fit the part.
    Data(crate::runtime::data::DataError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let src = "model m { visible x : real[2, 3]; visible y : categorical(4)[2]; visible s : spin;
            param a : real[4]; energy e = 0.5 * sum(square(x)) - sum(y @ a) - 0.1 * s; }";
        let c = crate::compile(src).expect("compiles");
        c.program.models.values().next().expect("a model").clone()
    }

    #[test]
    fn parts_name_boxes_of_units_in_row_major_order() {
        let m = model();
        let p = Part::parse("x[1, 1..]", &m).unwrap();
        assert_eq!((p.shape(), p.elements(), p.is_whole()), (vec![1, 2], vec![4, 5], false));
        let p = Part::parse("x[..1]", &m).unwrap();
        assert_eq!(p.elements(), [0, 1, 2]);
        assert!(Part::parse("x", &m).unwrap().is_whole());
        assert!(Part::parse("x[.., ..]", &m).unwrap().is_whole());
        // A categorical unit is its whole one-hot row.
        let p = Part::parse("y[1]", &m).unwrap();
        assert_eq!((p.shape(), p.elements()), (vec![1, 4], vec![4, 5, 6, 7]));
        assert_eq!(Part::parse("s", &m).unwrap().elements(), [0]);
    }

    #[test]
    fn bad_parts_say_what_is_wrong() {
        let m = model();
        let err = |t: &str| Part::parse(t, &m).unwrap_err();
        assert!(matches!(err("z[0]"), PartError::UnknownVariable { var, .. } if var == "z"));
        assert!(matches!(err("x[0..3]"), PartError::OutOfRange { axis: 0, size: 2, .. }));
        assert!(matches!(err("x[0, 2..2]"), PartError::OutOfRange { axis: 1, size: 3, .. }));
        assert!(matches!(err("x[0, 1, 2]"), PartError::Axes { given: 3, axes: 2, .. }));
        assert!(matches!(err("y[0, 1]"), PartError::Axes { given: 2, axes: 1, .. }));
        assert!(matches!(err("s[0]"), PartError::Axes { given: 1, axes: 0, .. }));
        assert!(matches!(err("x[a]"), PartError::Syntax { .. }));
        assert!(matches!(err("x[0"), PartError::Syntax { .. }));
        assert!(matches!(err("x[-1]"), PartError::Syntax { .. }));
        assert!(matches!(err("x[]"), PartError::Syntax { .. }));
        assert_eq!(parse_given("x[0]"), Err(PartError::NoFile { text: "x[0]".into() }));
        assert_eq!(parse_given("x[0] = a=b.csv"), Ok(("x[0]".into(), PathBuf::from("a=b.csv"))));
    }

    #[test]
    fn chains_take_the_rows_in_turn() {
        let m = model();
        let p = Part::parse("x[0, 0..2]", &m).unwrap();
        let c = p.clamp(&[1.0, 2.0, 3.0, 4.0], 5).unwrap();
        assert_eq!(c.elements, [0, 1]);
        assert_eq!(c.values, [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0]);
        assert_eq!(
            p.clamp(&[1.0, 2.0, 3.0], 5),
            Err(PartError::Values { text: "x[0, 0..2]".into(), given: 3, per_row: 2 })
        );
        assert!(p.clamp(&[], 5).is_err());
    }
}
